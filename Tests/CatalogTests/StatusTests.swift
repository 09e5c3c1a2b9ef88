import Catalog
import LifeboatCore
import LifeboatTesting
import Testing

@Suite("Replication status, points and events")
struct StatusTests {
    @Test("connect, status, commits, disconnect: recorded fields and derived lag, percent and ETA")
    func statusAndCommits() throws {
        let f = try CatalogFixture()
        try f.enroll("web-1", serial: "01")
        let fresh = try #require(try f.catalog.machine(named: "web-1"))
        #expect(fresh.lagSeconds(now: f.clock.now()) == nil)
        #expect(fresh.initialSyncPercent == nil)
        #expect(fresh.etaSeconds == nil)

        f.clock.advance(seconds: 5)
        try f.catalog.recordConnected(
            machine: "web-1",
            address: "192.0.2.7:51000",
            agentVersion: "0.3.0",
            volumes: [.init(name: "root", size: 8 << 30), .init(name: "data", size: 100 << 30)]
        )
        var machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.connected)
        #expect(machine.address == "192.0.2.7:51000")
        #expect(machine.agentVersion == "0.3.0")
        #expect(machine.lastSeen == f.clock.now())
        #expect(machine.volumes.map(\.name) == ["data", "root"])

        // Initial sync, a quarter done.
        try f.catalog.recordStatus(
            machine: "web-1",
            .init(
                state: "INITIAL_SYNC",
                backlogBytes: 3000,
                syncedBytes: 1000,
                totalBytes: 4000,
                throughputBytesPerSecond: 250
            )
        )
        machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.state == "INITIAL_SYNC")
        #expect(machine.initialSyncPercent == 25)
        #expect(machine.etaSeconds == 12)

        // A commit that is not consistent moves the last point but not the lag's reference.
        let firstCapture = f.clock.now()
        try f.catalog.recordCommit(
            machine: "web-1",
            point: 1,
            sequence: 1,
            captureTime: firstCapture,
            consistent: true,
            changedBytes: 4000
        )
        f.clock.advance(seconds: 10)
        let secondCapture = f.clock.now()
        try f.catalog.recordCommit(
            machine: "web-1",
            point: 2,
            sequence: 2,
            captureTime: secondCapture,
            consistent: false,
            changedBytes: 512
        )
        f.clock.advance(seconds: 20)
        machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.lastPoint == 2 && machine.lastSequence == 2)
        #expect(machine.lastPointCaptureTime == secondCapture)
        #expect(machine.lastConsistentCaptureTime == firstCapture)
        #expect(machine.lagSeconds(now: f.clock.now()) == 30)
        #expect(machine.lagSeconds(now: Timestamp(nanoseconds: firstCapture.nanoseconds - 1)) == 0, "never negative")

        // Continuous, backlog drained; zero throughput means no ETA.
        try f.catalog.recordStatus(
            machine: "web-1",
            .init(
                state: "STALLED",
                stateReason: "disk full on the replication server",
                backlogBytes: 10,
                syncedBytes: 4000,
                totalBytes: 4000,
                throughputBytesPerSecond: 0
            )
        )
        machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.state == "STALLED")
        #expect(machine.stateReason == "disk full on the replication server")
        #expect(machine.initialSyncPercent == 100)
        #expect(machine.etaSeconds == nil)

        try f.catalog.recordStatus(
            machine: "web-1",
            .init(
                state: "CONTINUOUS",
                backlogBytes: 10,
                syncedBytes: 4000,
                totalBytes: 4000,
                throughputBytesPerSecond: .nan
            )
        )
        #expect(try f.catalog.machine(named: "web-1")?.throughputBytesPerSecond == nil, "NaN counts as unknown")

        f.clock.advance(seconds: 1)
        try f.catalog.recordDisconnected(machine: "web-1", reason: "connection reset")
        machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(!machine.connected)
        #expect(machine.state == "DISCONNECTED")
        #expect(machine.stateReason == "connection reset")
        #expect(machine.lastSeen == f.clock.now())
        #expect(machine.backlogBytes == 10 && machine.syncedBytes == 4000 && machine.totalBytes == 4000)
        #expect(machine.lastPoint == 2 && machine.volumes.count == 2, "the last status stays")

        let points = try f.catalog.points(machine: "web-1", limit: 10)
        #expect(points.map(\.point) == [2, 1])
        #expect(
            points[1]
                == PointRecord(
                    machine: "web-1",
                    point: 1,
                    sequence: 1,
                    captureTime: firstCapture,
                    committedAt: firstCapture,
                    consistent: true,
                    changedBytes: 4000
                )
        )
        #expect(points[0].consistent == false && points[0].changedBytes == 512)
        #expect(try f.catalog.points(machine: "web-1", limit: 1).map(\.point) == [2])
    }

    @Test("unsigned 64-bit values round-trip exactly, beyond Int64.max")
    func largeValues() throws {
        let f = try CatalogFixture()
        try f.enroll("m", serial: "01")
        try f.catalog.recordCommit(
            machine: "m",
            point: .max,
            sequence: .max - 1,
            captureTime: f.clock.now(),
            consistent: true,
            changedBytes: .max
        )
        try f.catalog.recordStatus(
            machine: "m",
            .init(state: "BACKLOG", backlogBytes: .max, syncedBytes: 1 << 63, totalBytes: .max)
        )
        let machine = try #require(try f.catalog.machine(named: "m"))
        #expect(machine.lastPoint == .max && machine.lastSequence == .max - 1)
        #expect(machine.backlogBytes == .max && machine.syncedBytes == 1 << 63 && machine.totalBytes == .max)
        #expect(try f.catalog.points(machine: "m", limit: 1).first?.changedBytes == .max)
    }

    @Test("recording the same point twice keeps one row with the latest values")
    func samePointTwice() throws {
        let f = try CatalogFixture()
        try f.enroll("m", serial: "01")
        try f.catalog.recordCommit(
            machine: "m",
            point: 5,
            sequence: 9,
            captureTime: f.clock.now(),
            consistent: false,
            changedBytes: 1
        )
        try f.catalog.recordCommit(
            machine: "m",
            point: 5,
            sequence: 9,
            captureTime: f.clock.now(),
            consistent: true,
            changedBytes: 2
        )
        let points = try f.catalog.points(machine: "m", limit: 10)
        #expect(points.count == 1 && points[0].consistent && points[0].changedBytes == 2)
    }

    @Test("settings: nil leaves a value unchanged")
    func settings() throws {
        let f = try CatalogFixture()
        try f.enroll("m", serial: "01")
        try f.catalog.setSettings(machine: "m", throttleMbps: 100, maxFreezeMilliseconds: nil)
        try f.catalog.setSettings(machine: "m", throttleMbps: nil, maxFreezeMilliseconds: 1000)
        var machine = try #require(try f.catalog.machine(named: "m"))
        #expect(machine.throttleMbps == 100 && machine.maxFreezeMilliseconds == 1000)
        try f.catalog.setSettings(machine: "m", throttleMbps: 0, maxFreezeMilliseconds: .max)
        machine = try #require(try f.catalog.machine(named: "m"))
        #expect(machine.throttleMbps == 0 && machine.maxFreezeMilliseconds == .max)
    }

    @Test("bad volume lists and empty states are refused without changes")
    func badStatus() throws {
        let f = try CatalogFixture()
        try f.enroll("m", serial: "01")
        let before = try f.snapshot()
        expectError("machine.bad-volume") {
            try f.catalog.recordConnected(
                machine: "m",
                address: "a",
                agentVersion: "1",
                volumes: [.init(name: "v", size: 1), .init(name: "v", size: 2)]
            )
        }
        expectError("machine.bad-volume") {
            try f.catalog.recordConnected(
                machine: "m",
                address: "a",
                agentVersion: "1",
                volumes: [.init(name: "v", size: -1)]
            )
        }
        expectError("name.invalid") {
            try f.catalog.recordConnected(
                machine: "m",
                address: "a",
                agentVersion: "1",
                volumes: [.init(name: "../etc", size: 1)]
            )
        }
        expectError("machine.bad-status") { try f.catalog.recordStatus(machine: "m", .init(state: "")) }
        #expect(try f.snapshot() == before)
    }

    @Test("events come newest first, per machine or all, limited")
    func events() throws {
        let f = try CatalogFixture()
        for i in 0..<5 {
            try f.catalog.recordEvent(machine: i % 2 == 0 ? "even" : "odd", kind: "TEST", detail: "event \(i)")
            f.clock.advance(seconds: 1)
        }
        let all = try f.catalog.events(machine: nil, limit: 100)
        #expect(all.map(\.detail) == ["event 4", "event 3", "event 2", "event 1", "event 0"])
        #expect(all.map(\.time.seconds) == (0..<5).reversed().map { CatalogFixture.start.seconds + Int64($0) })
        #expect(zip(all, all.dropFirst()).allSatisfy { $0.id > $1.id })
        #expect(try f.catalog.events(machine: "even", limit: 2).map(\.detail) == ["event 4", "event 2"])
        #expect(try f.catalog.events(machine: "odd", limit: 10).map(\.machine) == ["odd", "odd"])
        #expect(try f.catalog.events(machine: "nobody", limit: 10).isEmpty)
        #expect(try f.catalog.events(machine: nil, limit: 0).isEmpty)
        expectError("machine.bad-event") { try f.catalog.recordEvent(machine: "m", kind: "", detail: "x") }
    }
}
