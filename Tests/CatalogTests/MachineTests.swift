import Catalog
import LifeboatCore
import LifeboatTesting
import Testing

@Suite("Machines and certificates")
struct MachineTests {
    let expires = Timestamp(seconds: CatalogFixture.start.seconds + 365 * 86400)

    @Test("enrolling a name that is active is enroll.machine-exists, and the token stays unused")
    func machineExists() throws {
        let f = try CatalogFixture()
        try f.enroll("web-1", serial: "01")
        let token = try f.catalog.createEnrollmentToken(validFor: 60)
        let before = try f.snapshot()
        let error = expectError("enroll.machine-exists") {
            try f.catalog.redeemEnrollmentToken(
                secret: token.secret,
                machine: "web-1",
                certificateSerial: "02",
                certificateExpires: expires
            )
        }
        #expect(
            error?.message
                == "machine web-1 is enrolled already; remove it first with `lifeboat machines remove web-1`"
        )
        #expect(try f.snapshot() == before)
        #expect(try f.catalog.enrollmentTokens().first { $0.id == token.id }?.usedAt == nil)
    }

    @Test("remove revokes the certificate; re-enrolling makes the new serial active and keeps the old one revoked")
    func removeAndReEnroll() throws {
        let f = try CatalogFixture()
        try f.enroll("web-1", serial: "01")
        try f.catalog.recordConnected(
            machine: "web-1",
            address: "10.0.0.5:40000",
            agentVersion: "0.1",
            volumes: [.init(name: "root", size: 1 << 30)]
        )
        try f.catalog.recordStatus(
            machine: "web-1",
            .init(state: "CONTINUOUS", backlogBytes: 5, syncedBytes: 10, totalBytes: 10)
        )
        try f.catalog.recordCommit(
            machine: "web-1",
            point: 7,
            sequence: 3,
            captureTime: f.clock.now(),
            consistent: true,
            changedBytes: 4096
        )
        try f.catalog.setSettings(machine: "web-1", throttleMbps: 50, maxFreezeMilliseconds: 400)

        f.clock.advance(seconds: 60)
        try f.catalog.removeMachine(named: "web-1")
        let removed = try #require(try f.catalog.machine(named: "web-1"))
        #expect(removed.removedAt == f.clock.now())
        #expect(!removed.isActive && !removed.connected)
        #expect(try f.catalog.machines().isEmpty)
        #expect(try f.catalog.machines(includeRemoved: true).map(\.name) == ["web-1"])
        #expect(try f.catalog.revokedSerials() == ["01"])
        #expect(try !f.catalog.isCertificateActive(serial: "01", machine: "web-1"))

        // A removed machine takes no status and cannot be removed twice.
        expectError("machine.unknown") { try f.catalog.recordDisconnected(machine: "web-1") }
        expectError("machine.unknown") { try f.catalog.removeMachine(named: "web-1") }

        // Its revoked serial cannot come back.
        let token = try f.catalog.createEnrollmentToken(validFor: 3600)
        expectError("enroll.bad-certificate") {
            try f.catalog.redeemEnrollmentToken(
                secret: token.secret,
                machine: "web-1",
                certificateSerial: "01",
                certificateExpires: expires
            )
        }

        f.clock.advance(seconds: 60)
        try f.catalog.redeemEnrollmentToken(
            secret: token.secret,
            machine: "web-1",
            certificateSerial: "02",
            certificateExpires: expires
        )
        let again = try #require(try f.catalog.machine(named: "web-1"))
        #expect(again.isActive)
        #expect(again.certificateSerial == "02")
        #expect(again.enrolledAt == f.clock.now())
        #expect(again.state == "INITIATING")
        #expect(again.backlogBytes == 0 && again.totalBytes == 0 && again.volumes.isEmpty && again.address == nil)
        #expect(again.lastPoint == 7, "the point history stays with the machine")
        #expect(again.throttleMbps == 50 && again.maxFreezeMilliseconds == 400, "settings stay")
        #expect(try f.catalog.isCertificateActive(serial: "02", machine: "web-1"))
        #expect(try !f.catalog.isCertificateActive(serial: "01", machine: "web-1"))
        #expect(try f.catalog.revokedSerials() == ["01"])
    }

    @Test("certificate checks: wrong machine, wrong serial, unknown machine")
    func certificateChecks() throws {
        let f = try CatalogFixture()
        try f.enroll("a", serial: "0a")
        try f.enroll("b", serial: "0b")
        #expect(try f.catalog.isCertificateActive(serial: "0a", machine: "a"))
        #expect(try !f.catalog.isCertificateActive(serial: "0a", machine: "b"))
        #expect(try !f.catalog.isCertificateActive(serial: "0c", machine: "a"))
        #expect(try !f.catalog.isCertificateActive(serial: "0a", machine: "nobody"))
    }

    @Test("unknown machines: machine.unknown for changes, nil for lookups; names are validated")
    func unknown() throws {
        let f = try CatalogFixture()
        #expect(try f.catalog.machine(named: "ghost") == nil)
        let error = expectError("machine.unknown") { try f.catalog.removeMachine(named: "ghost") }
        #expect(error?.message.contains("ghost") == true)
        expectError("machine.unknown") { try f.catalog.recordStatus(machine: "ghost", .init(state: "CONTINUOUS")) }
        expectError("machine.unknown") {
            try f.catalog.setSettings(machine: "ghost", throttleMbps: 1, maxFreezeMilliseconds: nil)
        }
        expectError("machine.unknown") {
            try f.catalog.recordCommit(
                machine: "ghost",
                point: 1,
                sequence: 1,
                captureTime: f.clock.now(),
                consistent: true,
                changedBytes: 0
            )
        }
        expectError("name.invalid") { _ = try f.catalog.machine(named: "a/b") }
        expectError("name.invalid") { try f.catalog.removeMachine(named: "") }
    }

    @Test("machines are listed sorted by name, with their volumes")
    func listing() throws {
        let f = try CatalogFixture()
        for (name, serial) in [("db-2", "03"), ("app", "01"), ("db-10", "02")] { try f.enroll(name, serial: serial) }
        try f.catalog.recordConnected(
            machine: "app",
            address: "10.0.0.1:1",
            agentVersion: "1",
            volumes: [.init(name: "vdb", size: 2), .init(name: "vda", size: 1)]
        )
        let machines = try f.catalog.machines()
        #expect(machines.map(\.name) == ["app", "db-10", "db-2"])
        #expect(machines[0].volumes == [.init(name: "vda", size: 1), .init(name: "vdb", size: 2)])
        #expect(machines[1].volumes.isEmpty)
    }
}
