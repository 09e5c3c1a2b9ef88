import Crypto
import GRDB
import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: access tokens and sessions")
struct AccessTokenTests {
    /// A catalog with an admin `alice` and an operator `bob`.
    static func fixture() throws -> CatalogFixture {
        let f = try CatalogFixture()
        try f.catalog.createUser(name: "alice", password: CatalogFixture.password, roles: [.admin])
        try f.catalog.createUser(name: "bob", password: CatalogFixture.password, roles: [.operator])
        return f
    }

    static func isSecret(_ secret: String) -> Bool {
        guard secret.hasPrefix("lbk1_") else { return false }
        let body = secret.dropFirst(5)
        return body.count == 43
            && body.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
    }

    @Test("an API token: lbk1_ + 43 base64url characters, only its SHA-256 stored, no CSRF")
    func createAPI() throws {
        let f = try Self.fixture()
        let issued = try f.catalog.createAccessToken(user: "bob", name: "nightly drill", kind: .api, validFor: 86_400)
        #expect(Self.isSecret(issued.secret), "\(issued.secret)")
        #expect(issued.csrf == nil)
        #expect(LaunchCatalogTests.isIdentifier(issued.record.id, prefix: "tok"), "\(issued.record.id)")
        #expect(issued.record.user == "bob")
        #expect(issued.record.name == "nightly drill")
        #expect(issued.record.kind == .api)
        #expect(issued.record.createdAt == CatalogFixture.start)
        #expect(issued.record.expiresAt == Timestamp(seconds: CatalogFixture.start.seconds + 86_400))
        #expect(issued.record.revokedAt == nil && issued.record.lastUsedAt == nil)
        #expect(try f.catalog.accessToken(id: issued.record.id) == issued.record)

        let stored = try f.catalog.read { db in
            try String.fetchAll(db, sql: "SELECT secret_hash || ' ' || COALESCE(csrf, '-') FROM access_tokens")
        }
        let expectedHash = Hex.encode(SHA256.hash(data: Array(issued.secret.utf8)))
        #expect(stored == [expectedHash + " -"])

        let other = try f.catalog.createAccessToken(user: "bob", name: "nightly drill", kind: .api, validFor: 86_400)
        #expect(other.secret != issued.secret && other.record.id != issued.record.id)
    }

    @Test("a session gets a CSRF secret, stored and handed back by authenticate")
    func session() throws {
        let f = try Self.fixture()
        let issued = try f.catalog.createAccessToken(
            user: "alice",
            name: "Firefox",
            kind: .session,
            validFor: 12 * 3600
        )
        let csrf = try #require(issued.csrf)
        #expect(csrf.count == 43)
        #expect(csrf != issued.secret && !issued.secret.hasSuffix(csrf))
        let found = try #require(try f.catalog.authenticate(secret: issued.secret))
        #expect(found.csrf == csrf)
        #expect(found.token.kind == .session)
        #expect(found.user.name == "alice")
        let another = try f.catalog.createAccessToken(user: "alice", name: "Firefox", kind: .session, validFor: 3600)
        #expect(another.csrf != csrf)
    }

    @Test("authenticate: the token and its user; nil for malformed, unknown, expired, revoked or disabled")
    func authenticate() throws {
        let f = try Self.fixture()
        let issued = try f.catalog.createAccessToken(user: "bob", name: "ci", kind: .api, validFor: 3600)
        let found = try #require(try f.catalog.authenticate(secret: issued.secret))
        #expect(found.token.id == issued.record.id)
        #expect(found.user == (try f.catalog.user(named: "bob")))
        #expect(found.csrf == nil)

        for bad in [
            "", "lbk1_", "lbk1_" + String(repeating: "A", count: 43), String(issued.secret.dropLast()),
            issued.secret + "A", "lbk2_" + issued.secret.dropFirst(5), issued.secret.uppercased(),
            "lbk1_" + String(repeating: "+", count: 43),
        ] where bad != issued.secret {
            #expect(try f.catalog.authenticate(secret: bad) == nil, "\(bad)")
        }

        // Valid strictly before expiresAt.
        f.clock.advance(seconds: 3599)
        #expect(try f.catalog.authenticate(secret: issued.secret) != nil)
        f.clock.advance(seconds: 1)
        #expect(try f.catalog.authenticate(secret: issued.secret) == nil)
        #expect(try f.catalog.accessToken(id: issued.record.id)?.isValid(now: f.clock.now()) == false)
    }

    @Test("last_used_at is written at most once a minute per token")
    func lastUsed() throws {
        let f = try Self.fixture()
        let issued = try f.catalog.createAccessToken(user: "bob", name: "ci", kind: .api, validFor: 3600)
        let first = try #require(try f.catalog.authenticate(secret: issued.secret))
        #expect(first.token.lastUsedAt == CatalogFixture.start)
        #expect(try f.catalog.accessToken(id: issued.record.id)?.lastUsedAt == CatalogFixture.start)

        f.clock.advance(seconds: 59)
        let second = try #require(try f.catalog.authenticate(secret: issued.secret))
        #expect(second.token.lastUsedAt == CatalogFixture.start)
        #expect(
            try f.catalog.accessToken(id: issued.record.id)?.lastUsedAt == CatalogFixture.start,
            "no write within a minute"
        )

        f.clock.advance(seconds: 1)
        _ = try f.catalog.authenticate(secret: issued.secret)
        #expect(try f.catalog.accessToken(id: issued.record.id)?.lastUsedAt == f.clock.now())
    }

    @Test("revokeAccessToken: at once, twice is fine and keeps the first date; unknown ids are refused")
    func revoke() throws {
        let f = try Self.fixture()
        let issued = try f.catalog.createAccessToken(user: "bob", name: "ci", kind: .api, validFor: 3600)
        let kept = try f.catalog.createAccessToken(user: "bob", name: "other", kind: .api, validFor: 3600)
        f.clock.advance(seconds: 5)
        let revokedAt = f.clock.now()
        let revoked = try f.catalog.revokeAccessToken(id: issued.record.id)
        #expect(revoked.revokedAt == revokedAt)
        #expect(!revoked.isValid(now: revokedAt))
        #expect(try f.catalog.authenticate(secret: issued.secret) == nil)
        #expect(try f.catalog.authenticate(secret: kept.secret) != nil)
        f.clock.advance(seconds: 5)
        #expect(try f.catalog.revokeAccessToken(id: issued.record.id).revokedAt == revokedAt)
        try f.expectUnchanged("access.unknown") { _ = try f.catalog.revokeAccessToken(id: "tok-0000000000000000") }
    }

    @Test("createAccessToken errors: validity out of range, unknown or disabled user; nothing changes")
    func createErrors() throws {
        let f = try Self.fixture()
        for seconds: Int64 in [0, -1, 366 * 86_400 + 1, .max] {
            try f.expectUnchanged("access.invalid-validity") {
                _ = try f.catalog.createAccessToken(user: "bob", name: "x", kind: .api, validFor: seconds)
            }
        }
        _ = try f.catalog.createAccessToken(user: "bob", name: "year", kind: .api, validFor: 366 * 86_400)
        try f.expectUnchanged("user.unknown") {
            _ = try f.catalog.createAccessToken(user: "nobody", name: "x", kind: .api, validFor: 60)
        }
        try f.catalog.setUserDisabled("bob", disabled: true)
        try f.expectUnchanged("user.disabled") {
            _ = try f.catalog.createAccessToken(user: "bob", name: "x", kind: .session, validFor: 60)
        }
    }

    @Test("a token of a disabled user does not authenticate, even if it was not revoked")
    func disabledUser() throws {
        let f = try Self.fixture()
        let issued = try f.catalog.createAccessToken(user: "bob", name: "ci", kind: .api, validFor: 3600)
        // Disabled behind the catalog's back: the token is still unrevoked, the user check alone refuses it.
        try f.catalog.execute(sql: "UPDATE users SET disabled_at = 1 WHERE name = 'bob'")
        #expect(try f.catalog.accessToken(id: issued.record.id)?.revokedAt == nil)
        #expect(try f.catalog.authenticate(secret: issued.secret) == nil)
    }

    @Test("accessTokens lists newest first, of one user or all")
    func listing() throws {
        let f = try Self.fixture()
        let a = try f.catalog.createAccessToken(user: "bob", name: "a", kind: .api, validFor: 3600)
        f.clock.advance(seconds: 1)
        let b = try f.catalog.createAccessToken(user: "alice", name: "b", kind: .session, validFor: 3600)
        f.clock.advance(seconds: 1)
        let c = try f.catalog.createAccessToken(user: "bob", name: "c", kind: .session, validFor: 3600)
        #expect(try f.catalog.accessTokens(user: nil).map(\.id) == [c, b, a].map(\.record.id))
        #expect(try f.catalog.accessTokens(user: "bob").map(\.id) == [c, a].map(\.record.id))
        #expect(try f.catalog.accessTokens(user: "nobody").isEmpty)
        #expect(try f.catalog.accessToken(id: "tok-ffffffffffffffff") == nil)
    }

    @Test("deleteExpiredSessions removes sessions expired or revoked before the cut-off, never API tokens")
    func cleanup() throws {
        let f = try Self.fixture()
        let short = try f.catalog.createAccessToken(user: "bob", name: "s", kind: .session, validFor: 60)
        let long = try f.catalog.createAccessToken(user: "bob", name: "l", kind: .session, validFor: 86_400)
        let revoked = try f.catalog.createAccessToken(user: "bob", name: "r", kind: .session, validFor: 86_400)
        let api = try f.catalog.createAccessToken(user: "bob", name: "a", kind: .api, validFor: 60)
        try f.catalog.revokeAccessToken(id: revoked.record.id)
        f.clock.advance(seconds: 3600)
        #expect(try f.catalog.deleteExpiredSessions(olderThan: f.clock.now()) == 2)
        #expect(try f.catalog.accessTokens(user: nil).map(\.id).sorted() == [long.record.id, api.record.id].sorted())
        #expect(try f.catalog.accessToken(id: short.record.id) == nil)
        #expect(try f.catalog.deleteExpiredSessions(olderThan: f.clock.now()) == 0)
    }

    @Test("tokens survive a reopen")
    func reopen() throws {
        let f = try Self.fixture()
        let issued = try f.catalog.createAccessToken(user: "bob", name: "ci", kind: .session, validFor: 3600)
        try f.reopen()
        let found = try #require(try f.catalog.authenticate(secret: issued.secret))
        #expect(found.csrf == issued.csrf)
        #expect(found.token.id == issued.record.id)
    }
}
