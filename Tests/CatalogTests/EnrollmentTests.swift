import Crypto
import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Enrollment tokens")
struct EnrollmentTests {
    let expires = Timestamp(seconds: CatalogFixture.start.seconds + 365 * 86400)

    @Test("create, list, redeem; a second redeem is enroll.token-used and changes nothing")
    func lifecycle() throws {
        let f = try CatalogFixture()
        let token = try f.catalog.createEnrollmentToken(validFor: 600, note: "for web-1")
        #expect(token.secret.count == 64)
        #expect(Hex.decode(token.secret)?.count == 32)
        #expect(token.id.count == 8)
        #expect(token.expiresAt == Timestamp(seconds: CatalogFixture.start.seconds + 600))

        let listed = try f.catalog.enrollmentTokens()
        #expect(
            listed == [
                EnrollmentTokenRecord(
                    id: token.id,
                    createdAt: CatalogFixture.start,
                    expiresAt: token.expiresAt,
                    note: "for web-1"
                )
            ]
        )
        #expect(listed[0].isRedeemable(now: f.clock.now()))

        f.clock.advance(seconds: 10)
        try f.catalog.redeemEnrollmentToken(
            secret: token.secret,
            machine: "web-1",
            certificateSerial: "01ab",
            certificateExpires: expires
        )
        let used = try #require(try f.catalog.enrollmentTokens().first)
        #expect(used.usedAt == f.clock.now())
        #expect(used.usedBy == "web-1")
        #expect(!used.isRedeemable(now: f.clock.now()))

        let machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.certificateSerial == "01ab")
        #expect(machine.certificateExpires == expires)
        #expect(machine.enrolledAt == f.clock.now())
        #expect(machine.state == "INITIATING")
        #expect(machine.isActive && !machine.connected)
        #expect(machine.throttleMbps == 0 && machine.maxFreezeMilliseconds == 250)
        #expect(try f.catalog.isCertificateActive(serial: "01ab", machine: "web-1"))

        let before = try f.snapshot()
        let error = expectError("enroll.token-used") {
            try f.catalog.redeemEnrollmentToken(
                secret: token.secret,
                machine: "db-1",
                certificateSerial: "02",
                certificateExpires: expires
            )
        }
        #expect(error?.message.contains("web-1") == true)
        #expect(try f.snapshot() == before)
    }

    @Test("a token is accepted until just before it expires, then enroll.token-expired and nothing changes")
    func expiry() throws {
        let f = try CatalogFixture()
        let early = try f.catalog.createEnrollmentToken(validFor: 60)
        let late = try f.catalog.createEnrollmentToken(validFor: 60)
        f.clock.advance(seconds: 59)
        try f.catalog.redeemEnrollmentToken(
            secret: early.secret,
            machine: "a",
            certificateSerial: "01",
            certificateExpires: expires
        )

        f.clock.advance(seconds: 1)
        let before = try f.snapshot()
        #expect(try f.catalog.enrollmentTokens().first { $0.id == late.id }?.isExpired(now: f.clock.now()) == true)
        let error = expectError("enroll.token-expired") {
            try f.catalog.redeemEnrollmentToken(
                secret: late.secret,
                machine: "b",
                certificateSerial: "02",
                certificateExpires: expires
            )
        }
        #expect(error?.message.contains(late.id) == true)
        #expect(try f.snapshot() == before)
        #expect(try f.catalog.machine(named: "b") == nil)
    }

    @Test("unknown, malformed or differently-cased secrets", arguments: ["", "zz", String(repeating: "0", count: 64)])
    func badToken(secret: String) throws {
        let f = try CatalogFixture()
        _ = try f.catalog.createEnrollmentToken(validFor: 60)
        let before = try f.snapshot()
        expectError("enroll.bad-token") {
            try f.catalog.redeemEnrollmentToken(
                secret: secret,
                machine: "a",
                certificateSerial: "01",
                certificateExpires: expires
            )
        }
        #expect(try f.snapshot() == before)
    }

    @Test("an upper-case copy of the secret is the same secret")
    func upperCase() throws {
        let f = try CatalogFixture()
        let token = try f.catalog.createEnrollmentToken(validFor: 60)
        try f.catalog.redeemEnrollmentToken(
            secret: token.secret.uppercased(),
            machine: "a",
            certificateSerial: "01",
            certificateExpires: expires
        )
        #expect(try f.catalog.machine(named: "a") != nil)
    }

    @Test("bad input is refused before anything changes")
    func badInput() throws {
        let f = try CatalogFixture()
        let token = try f.catalog.createEnrollmentToken(validFor: 60)
        let before = try f.snapshot()
        expectError("name.invalid") {
            try f.catalog.redeemEnrollmentToken(
                secret: token.secret,
                machine: "-x",
                certificateSerial: "01",
                certificateExpires: expires
            )
        }
        expectError("enroll.bad-certificate") {
            try f.catalog.redeemEnrollmentToken(
                secret: token.secret,
                machine: "x",
                certificateSerial: "",
                certificateExpires: expires
            )
        }
        expectError("enroll.invalid-validity") { _ = try f.catalog.createEnrollmentToken(validFor: 0) }
        expectError("enroll.invalid-validity") { _ = try f.catalog.createEnrollmentToken(validFor: .max) }
        #expect(try f.snapshot() == before)
    }

    @Test("only a SHA-256 of the secret is stored, in no file of the catalog is the secret")
    func onlyHashStored() throws {
        let f = try CatalogFixture()
        let token = try f.catalog.createEnrollmentToken(validFor: 60)
        let hash = Hex.encode(SHA256.hash(data: try #require(Hex.decode(token.secret))))
        var hashFound = false
        for file in try FileTools.allFiles(under: f.directory.path) {
            #expect(try !FileTools.contains(file, Array(token.secret.utf8)), "secret in \(file)")
            hashFound = try hashFound || FileTools.contains(file, Array(hash.utf8))
        }
        #expect(hashFound)
    }

    @Test("an unused token can be deleted; a used one stays")
    func deleteToken() throws {
        let f = try CatalogFixture()
        let unused = try f.catalog.createEnrollmentToken(validFor: 60)
        try f.catalog.deleteEnrollmentToken(id: unused.id)
        expectError("enroll.bad-token") {
            try f.catalog.redeemEnrollmentToken(
                secret: unused.secret,
                machine: "a",
                certificateSerial: "01",
                certificateExpires: expires
            )
        }
        expectError("enroll.unknown-token") { try f.catalog.deleteEnrollmentToken(id: unused.id) }

        let used = try f.catalog.createEnrollmentToken(validFor: 60)
        try f.catalog.redeemEnrollmentToken(
            secret: used.secret,
            machine: "a",
            certificateSerial: "01",
            certificateExpires: expires
        )
        expectError("enroll.token-used") { try f.catalog.deleteEnrollmentToken(id: used.id) }
        #expect(try f.catalog.enrollmentTokens().map(\.id) == [used.id])
    }

    @Test(
        "SHA-256 matches the FIPS 180-4 test vectors",
        arguments: [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
            ),
            (
                "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
                "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
            ),
        ]
    )
    func sha256(message: String, digest: String) {
        #expect(Hex.encode(SHA256.hash(data: Array(message.utf8))) == digest)
    }
}
