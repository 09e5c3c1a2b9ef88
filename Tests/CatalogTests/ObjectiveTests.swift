import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: recovery objectives")
struct ObjectiveTests {
    /// A drill of `machines` whose items end as given (an RTO in seconds when launched, nil when failed),
    /// recorded the way the launch service records it.
    @discardableResult
    static func drill(_ f: CatalogFixture, mode: LaunchMode = .test, _ outcomes: [(String, Int64?)]) throws -> JobRecord
    {
        let job = try f.catalog.createLaunchJob(mode: mode, targets: outcomes.map { LaunchCatalogTests.target($0.0) })
        _ = try f.catalog.claimNextJob()
        for (item, outcome) in zip(job.items, outcomes) {
            if let rto = outcome.1 {
                try f.catalog.setJobItem(
                    job: job.id,
                    instance: item.instance,
                    status: .launched,
                    rtoNanoseconds: rto * 1_000_000_000
                )
            } else {
                try f.catalog.setJobItem(job: job.id, instance: item.instance, status: .failed, error: "check failed")
            }
            try f.catalog.recordLaunchOutcome(machine: outcome.0, mode: mode, passed: outcome.1 != nil)
        }
        try f.catalog.completeJob(job.id)
        return job
    }

    static func commit(_ f: CatalogFixture, _ machine: String, secondsAgo: Int64, consistent: Bool = true) throws {
        let capture = Timestamp(seconds: f.clock.now().seconds - secondsAgo)
        try f.catalog.recordCommit(
            machine: machine,
            point: UInt64(capture.seconds),
            sequence: 1,
            captureTime: capture,
            consistent: consistent,
            changedBytes: 1
        )
    }

    @Test("objectives: worst lag and worst last passed drill RTO against the objectives, per application")
    func objectives() throws {
        let f = try LaunchCatalogTests.fixture("web-1", "db-1", "cache-1", "old-1")
        for machine in ["web-1", "db-1", "old-1"] { try f.catalog.setApplication(machine: machine, "shop") }
        try f.catalog.setApplication(machine: "cache-1", "blog")
        try f.catalog.updateApplication(name: "shop", rpoSeconds: .set(300), rtoSeconds: .set(600))
        try f.catalog.createApplication(name: "empty", rpoSeconds: 60)
        try f.catalog.removeMachine(named: "old-1")

        // Nothing measured yet.
        var status = try f.catalog.objectives(now: f.clock.now())
        #expect(status.map(\.application) == ["blog", "empty", "shop"])
        var shop = status[2]
        #expect(shop.machines.map(\.machine) == ["db-1", "web-1"], "removed machines are left out")
        #expect(shop.measuredRPOSeconds == nil && shop.measuredRTOSeconds == nil)
        #expect(shop.rpoMet == nil && shop.rtoMet == nil && shop.lastDrillAt == nil)
        #expect(shop.machines.allSatisfy { $0.lagSeconds == nil && $0.lastDrillPassed == nil && $0.lastDrillAt == nil })

        // Replication: web-1 100 s behind, db-1 30 s; one machine without a consistent point hides the RPO.
        try Self.commit(f, "web-1", secondsAgo: 100)
        try Self.commit(f, "db-1", secondsAgo: 30)
        try Self.commit(f, "cache-1", secondsAgo: 5, consistent: false)
        status = try f.catalog.objectives(now: f.clock.now())
        shop = status[2]
        #expect(shop.measuredRPOSeconds == 100)
        #expect(shop.rpoObjectiveSeconds == 300 && shop.rpoMet == true)
        #expect(shop.machines.map(\.lagSeconds) == [30, 100])
        #expect(status[0].measuredRPOSeconds == nil && status[0].rpoMet == nil, "cache-1 has no consistent point")
        #expect(status[1].machines.isEmpty && status[1].measuredRPOSeconds == nil && status[1].rpoMet == nil)
        #expect(try f.catalog.objectives(now: Timestamp(seconds: f.clock.now().seconds + 250))[2].rpoMet == false)

        // A drill of both: the worst RTO counts.
        f.clock.advance(seconds: 60)
        try Self.drill(f, [("web-1", 120), ("db-1", 200)])
        let drilledAt = f.clock.now()
        shop = try f.catalog.objectives(now: f.clock.now())[2]
        #expect(shop.measuredRTOSeconds == 200 && shop.rtoMet == true)
        #expect(shop.lastDrillAt == drilledAt)
        #expect(shop.machines.map(\.lastDrillRTOSeconds) == [200, 120])
        #expect(shop.machines.map(\.lastDrillPassed) == [true, true])

        // db-1's next drill fails: its last passed RTO still counts, its last drill shows the failure.
        f.clock.advance(seconds: 60)
        try Self.drill(f, [("db-1", nil)])
        // A recovery launch is not a drill.
        f.clock.advance(seconds: 60)
        try Self.drill(f, mode: .recovery, [("web-1", 5)])
        shop = try f.catalog.objectives(now: f.clock.now())[2]
        let db = shop.machines[0]
        #expect(db.lastDrillPassed == false)
        #expect(db.lastDrillAt == Timestamp(seconds: drilledAt.seconds + 60))
        #expect(db.lastDrillRTOSeconds == 200)
        #expect(shop.machines[1].lastDrillRTOSeconds == 120)
        #expect(shop.measuredRTOSeconds == 200)
        #expect(shop.lastDrillAt == Timestamp(seconds: drilledAt.seconds + 60))

        // web-1's newest passed drill is slower than the objective.
        f.clock.advance(seconds: 60)
        try Self.drill(f, [("web-1", 700)])
        shop = try f.catalog.objectives(now: f.clock.now())[2]
        #expect(shop.measuredRTOSeconds == 700 && shop.rtoMet == false)
        #expect(shop.machines[1].lastDrillRTOSeconds == 700)

        // Without an objective there is nothing to meet.
        try f.catalog.updateApplication(name: "shop", rtoSeconds: .clear)
        shop = try f.catalog.objectives(now: f.clock.now())[2]
        #expect(shop.rtoObjectiveSeconds == nil && shop.rtoMet == nil && shop.measuredRTOSeconds == 700)
    }

    @Test("a machine never drilled leaves the application's RTO unmeasured")
    func undrilledMachine() throws {
        let f = try LaunchCatalogTests.fixture("web-1", "db-1")
        try f.catalog.setApplication(machine: "web-1", "shop")
        try f.catalog.setApplication(machine: "db-1", "shop")
        try f.catalog.updateApplication(name: "shop", rtoSeconds: .set(600))
        try Self.drill(f, [("web-1", 100)])
        let shop = try #require(try f.catalog.objectives(now: f.clock.now()).first)
        #expect(shop.machines.map(\.lastDrillRTOSeconds) == [nil, 100])
        #expect(shop.measuredRTOSeconds == nil && shop.rtoMet == nil)
    }
}
