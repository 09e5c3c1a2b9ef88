import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

/// Launch state in the catalog: per-machine settings and applications, jobs and their items and logs,
/// recovery instances, the DR lifecycle.
@Suite("Catalog: launch jobs, instances and the DR lifecycle")
struct LaunchCatalogTests {
    /// A point id with the top bit set: stored as the INTEGER with the same bit pattern.
    static let bigPoint: UInt64 = 0xF000_0000_0000_0042
    static let capture = Timestamp(seconds: CatalogFixture.start.seconds - 120)

    static func target(_ machine: String, point: UInt64 = bigPoint) -> LaunchTarget {
        LaunchTarget(machine: machine, point: point, pointCaptureTime: capture)
    }

    static func isIdentifier(_ id: String, prefix: String) -> Bool {
        guard id.hasPrefix(prefix + "-") else { return false }
        let suffix = id.dropFirst(prefix.count + 1)
        return suffix.count == 16 && suffix.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
    }

    /// A fixture with machines enrolled.
    static func fixture(_ machines: String...) throws -> CatalogFixture {
        let f = try CatalogFixture()
        for (index, machine) in machines.enumerated() { try f.enroll(machine, serial: "0\(index + 1)") }
        return f
    }

    /// One launched instance of `machine`, moved to `state`.
    static func instance(_ f: CatalogFixture, _ machine: String, state: InstanceState, mode: LaunchMode = .test) throws -> InstanceRecord {
        let job = try f.catalog.createLaunchJob(mode: mode, targets: [target(machine)])
        let id = job.items[0].instance
        if state != .pending { try f.catalog.setInstanceState(id, state, reason: "set by the test") }
        return try #require(try f.catalog.instance(id: id))
    }

    // MARK: - Schema

    @Test("v3-launch follows v2-machine-paused and is applied to a fresh catalog")
    func migration() throws {
        let f = try CatalogFixture()
        #expect(Migrations.identifiers.contains("v3-launch"))
        #expect(Migrations.identifiers.firstIndex(of: "v3-launch")! > Migrations.identifiers.firstIndex(of: "v2-machine-paused")!)
        #expect(try f.catalog.appliedMigrations().contains("v3-launch"))
    }

    @Test("a catalog from before v3-launch is upgraded on open: machines keep their data and get the launch defaults")
    func upgradeFromV2() throws {
        let f = try Self.fixture("web-1")
        try f.catalog.setSettings(machine: "web-1", throttleMbps: 40, maxFreezeMilliseconds: 300)
        // Undo v4-control-plane and v3-launch: what a catalog written by the previous release looks like.
        try f.catalog.execute(sql: ControlPlaneMigrationTests.undoV4)
        try f.catalog.execute(sql: """
            DROP TABLE jobs; DROP TABLE job_items; DROP TABLE job_events; DROP TABLE recovery_instances;
            ALTER TABLE machines DROP COLUMN application;
            ALTER TABLE machines DROP COLUMN launch_settings;
            ALTER TABLE machines DROP COLUMN dr_lifecycle;
            ALTER TABLE machines DROP COLUMN last_drill_at;
            ALTER TABLE machines DROP COLUMN last_drill_passed_at;
            DELETE FROM grdb_migrations WHERE identifier = 'v3-launch';
            """)
        #expect(try !f.catalog.appliedMigrations().contains("v3-launch"))

        try f.reopen()
        #expect(try f.catalog.appliedMigrations() == Migrations.identifiers)
        let machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.throttleMbps == 40)
        #expect(machine.maxFreezeMilliseconds == 300)
        #expect(machine.application == nil)
        #expect(machine.launchSettings == LaunchSettings())
        #expect(machine.drLifecycle == .notTested)
        #expect(machine.lastDrillAt == nil && machine.lastDrillPassedAt == nil)
        let job = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1")])
        #expect(try f.catalog.job(id: job.id) == job)
    }

    @Test("a newly enrolled machine: no application, default launch settings, NOT_TESTED")
    func machineDefaults() throws {
        let f = try Self.fixture("web-1")
        let machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.application == nil)
        #expect(machine.launchSettings == LaunchSettings())
        #expect(machine.drLifecycle == .notTested)
        #expect(machine.effectiveLifecycle(now: f.clock.now()) == .notTested)
        #expect(machine.lastDrillAt == nil)
        #expect(machine.lastDrillPassedAt == nil)
    }

    // MARK: - Settings and applications

    @Test("launch settings are stored, read back, and survive a reopen")
    func launchSettingsRoundTrip() throws {
        let f = try Self.fixture("web-1", "db-1")
        var settings = LaunchSettings()
        settings.launcher = .command
        settings.command = "/usr/local/bin/launch"
        settings.diskDelivery = .raw
        settings.vcpus = 2
        settings.memoryMiB = 2048
        settings.recoveryNetwork = .bridge("br0")
        settings.recoveryAddress = "10.0.0.9"
        settings.checks = [.tcp(port: 22), .http(port: 80, path: "/", status: 200, bodyPattern: "ok")]
        settings.forwardPorts = [443]
        settings.qemuArguments = ["-device", "virtio-rng-pci"]
        try f.catalog.setLaunchSettings(machine: "web-1", settings)
        #expect(try f.catalog.machine(named: "web-1")?.launchSettings == settings)
        #expect(try f.catalog.machine(named: "db-1")?.launchSettings == LaunchSettings(), "other machines keep theirs")
        try f.reopen()
        #expect(try f.catalog.machine(named: "web-1")?.launchSettings == settings)
        #expect(try f.catalog.machines().first { $0.name == "web-1" }?.launchSettings == settings)

        // Replacing, not merging.
        try f.catalog.setLaunchSettings(machine: "web-1", LaunchSettings())
        #expect(try f.catalog.machine(named: "web-1")?.launchSettings == LaunchSettings())
    }

    @Test("the stored form is JSON with sorted keys and unescaped slashes, and decodes to the same settings")
    func storedForm() throws {
        var settings = LaunchSettings()
        settings.launcher = .command
        settings.command = "/opt/launch"
        let text = try LaunchSettingsCoding.encode(settings)
        #expect(text.contains(#""command":"/opt/launch""#))
        let keys = ["checkTimeoutSeconds", "checks", "command", "diskDelivery", "forwardPorts", "launcher", "memoryMiB",
                    "qemuArguments", "recoveryNetwork", "vcpus"]
        let positions = keys.map { text.range(of: "\"\($0)\":")?.lowerBound }
        #expect(positions.allSatisfy { $0 != nil }, "\(text)")
        let found = positions.compactMap { $0 }
        #expect(found == found.sorted(), "keys sorted: \(text)")
        #expect(try LaunchSettingsCoding.decode(text) == settings)
    }

    @Test("invalid settings are launch.bad-settings and change nothing; unknown, removed or misnamed machines are refused")
    func launchSettingsErrors() throws {
        let f = try Self.fixture("web-1", "old-1")
        var good = LaunchSettings()
        good.vcpus = 4
        try f.catalog.setLaunchSettings(machine: "web-1", good)
        var bad = LaunchSettings()
        bad.memoryMiB = 1
        expectError("launch.bad-settings") { try f.catalog.setLaunchSettings(machine: "web-1", bad) }
        var noCommand = LaunchSettings()
        noCommand.launcher = .command
        expectError("launch.bad-settings") { try f.catalog.setLaunchSettings(machine: "web-1", noCommand) }
        #expect(try f.catalog.machine(named: "web-1")?.launchSettings == good)

        expectError("machine.unknown") { try f.catalog.setLaunchSettings(machine: "nobody", good) }
        try f.catalog.removeMachine(named: "old-1")
        expectError("machine.unknown") { try f.catalog.setLaunchSettings(machine: "old-1", good) }
        expectError("name.invalid") { try f.catalog.setLaunchSettings(machine: "bad name", good) }
    }

    @Test("settings stored in a form this build cannot read come back as the defaults")
    func unreadableStoredSettings() throws {
        let f = try Self.fixture("web-1")
        try f.catalog.execute(sql: #"UPDATE machines SET launch_settings = '{"vcpus": 0}' WHERE name = 'web-1'"#)
        #expect(try f.catalog.machine(named: "web-1")?.launchSettings == LaunchSettings())
        try f.catalog.execute(sql: "UPDATE machines SET launch_settings = 'not json' WHERE name = 'web-1'")
        #expect(try f.catalog.machine(named: "web-1")?.launchSettings == LaunchSettings())
    }

    @Test("applications: members sorted by name, removed machines left out, nil takes a machine out")
    func applications() throws {
        let f = try Self.fixture("web-2", "web-1", "db-1", "cache-1")
        try f.catalog.setApplication(machine: "web-2", "shop")
        try f.catalog.setApplication(machine: "db-1", "shop")
        try f.catalog.setApplication(machine: "web-1", "shop")
        try f.catalog.setApplication(machine: "cache-1", "blog")
        #expect(try f.catalog.machines(application: "shop").map(\.name) == ["db-1", "web-1", "web-2"])
        #expect(try f.catalog.machines(application: "blog").map(\.name) == ["cache-1"])
        #expect(try f.catalog.machine(named: "web-1")?.application == "shop")

        try f.catalog.setApplication(machine: "web-2", nil)
        #expect(try f.catalog.machine(named: "web-2")?.application == nil)
        try f.catalog.removeMachine(named: "db-1")
        #expect(try f.catalog.machines(application: "shop").map(\.name) == ["web-1"])

        // Moving a machine to another application.
        try f.catalog.setApplication(machine: "web-1", "blog")
        #expect(try f.catalog.machines(application: "blog").map(\.name) == ["cache-1", "web-1"])
        let none = expectError("application.unknown") { _ = try f.catalog.machines(application: "shop") }
        #expect(none?.message.contains("--application shop") == true)
    }

    @Test("application errors: unknown application, invalid names, unknown or removed machines")
    func applicationErrors() throws {
        let f = try Self.fixture("web-1", "old-1")
        expectError("application.unknown") { _ = try f.catalog.machines(application: "nothing") }
        expectError("name.invalid") { _ = try f.catalog.machines(application: "") }
        expectError("name.invalid") { try f.catalog.setApplication(machine: "web-1", "has space") }
        expectError("name.invalid") { try f.catalog.setApplication(machine: "-web", "shop") }
        expectError("machine.unknown") { try f.catalog.setApplication(machine: "ghost", "shop") }
        try f.catalog.removeMachine(named: "old-1")
        expectError("machine.unknown") { try f.catalog.setApplication(machine: "old-1", "shop") }
        #expect(try f.catalog.machine(named: "web-1")?.application == nil)
    }

    // MARK: - Launch jobs

    @Test("a TEST launch job: PENDING, one item and one PENDING instance per machine, in the order given")
    func createLaunchJob() throws {
        let f = try Self.fixture("web-1", "db-1")
        var command = LaunchSettings()
        command.launcher = .command
        command.command = "/opt/launch"
        try f.catalog.setLaunchSettings(machine: "db-1", command)

        let job = try f.catalog.createLaunchJob(
            mode: .test,
            targets: [Self.target("web-1"), LaunchTarget(machine: "db-1", point: 7, pointCaptureTime: Timestamp(seconds: 5))]
        )
        #expect(Self.isIdentifier(job.id, prefix: "job"), "\(job.id)")
        #expect(job.type == .launch)
        #expect(job.initiatedBy == .startDrill)
        #expect(job.mode == .test)
        #expect(job.status == .pending)
        #expect(job.createdAt == CatalogFixture.start)
        #expect(job.startedAt == nil && job.endedAt == nil)
        #expect(job.items.map(\.machine) == ["web-1", "db-1"])
        #expect(job.items.map(\.point) == [Self.bigPoint, 7])
        #expect(job.items.map(\.pointCaptureTime) == [Self.capture, Timestamp(seconds: 5)])
        #expect(job.items.allSatisfy { $0.launchStatus == .pending && $0.rtoNanoseconds == nil && $0.error == nil })
        #expect(Set(job.items.map(\.instance)).count == 2)
        #expect(try f.catalog.job(id: job.id) == job)

        for item in job.items {
            #expect(Self.isIdentifier(item.instance, prefix: "ri"), "\(item.instance)")
            let instance = try #require(try f.catalog.instance(id: item.instance))
            #expect(instance.machine == item.machine)
            #expect(instance.job == job.id)
            #expect(instance.mode == .test)
            #expect(instance.point == item.point)
            #expect(instance.pointCaptureTime == item.pointCaptureTime)
            #expect(instance.state == .pending)
            #expect(instance.stateReason == nil && instance.runtime == nil)
            #expect(instance.createdAt == CatalogFixture.start)
            #expect(instance.launchedAt == nil && instance.terminatedAt == nil)
            // The launcher the machine is configured with when the job is created.
            #expect(instance.launcher == (item.machine == "db-1" ? "command" : "qemu"))
        }
    }

    @Test("a RECOVERY launch is initiated by START_RECOVERY; a machine may be launched again in a later job")
    func createRecoveryJob() throws {
        let f = try Self.fixture("web-1")
        let drill = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1")])
        let job = try f.catalog.createLaunchJob(mode: .recovery, targets: [Self.target("web-1", point: 9)])
        #expect(job.id != drill.id)
        #expect(job.initiatedBy == .startRecovery)
        #expect(job.mode == .recovery)
        let instance = try #require(try f.catalog.instance(id: job.items[0].instance))
        #expect(instance.mode == .recovery)
        #expect(instance.point == 9)
        #expect(try f.catalog.instances().count == 2)
    }

    @Test("launch job errors: no machines, a machine twice, an unknown or removed machine — and nothing is created")
    func createLaunchJobErrors() throws {
        let f = try Self.fixture("web-1", "old-1")
        try f.catalog.removeMachine(named: "old-1")
        expectError("launch.no-machines") { _ = try f.catalog.createLaunchJob(mode: .test, targets: []) }
        let twice = expectError("launch.duplicate-machine") {
            _ = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1"), Self.target("web-1", point: 2)])
        }
        #expect(twice?.message.contains("web-1") == true)
        // The unknown machine comes after a good one: the job and the first instance must not stay behind.
        expectError("machine.unknown") {
            _ = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1"), Self.target("ghost")])
        }
        expectError("machine.unknown") {
            _ = try f.catalog.createLaunchJob(mode: .recovery, targets: [Self.target("web-1"), Self.target("old-1")])
        }
        expectError("name.invalid") { _ = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("a b")]) }
        #expect(try f.catalog.jobs().isEmpty)
        #expect(try f.catalog.instances(includeTerminated: true).isEmpty)
        #expect(try f.catalog.claimNextJob() == nil)
    }

    // MARK: - The queue

    @Test("claimNextJob takes the oldest PENDING job and marks it STARTED; nil when none waits")
    func claimOrder() throws {
        let f = try Self.fixture("web-1", "db-1")
        #expect(try f.catalog.claimNextJob() == nil)
        let first = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1")])
        f.clock.advance(seconds: 1)
        let second = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("db-1")])
        f.clock.advance(seconds: 1)
        let third = try f.catalog.createLaunchJob(mode: .recovery, targets: [Self.target("web-1")])

        f.clock.advance(seconds: 10)
        let claimed = try #require(try f.catalog.claimNextJob())
        #expect(claimed.id == first.id)
        #expect(claimed.status == .started)
        #expect(claimed.startedAt == f.clock.now())
        #expect(claimed.endedAt == nil)
        #expect(claimed.items == first.items)
        #expect(try f.catalog.job(id: first.id)?.status == .started)
        #expect(try f.catalog.job(id: second.id)?.status == .pending)

        #expect(try f.catalog.claimNextJob()?.id == second.id)
        #expect(try f.catalog.claimNextJob()?.id == third.id)
        #expect(try f.catalog.claimNextJob() == nil)
        #expect(try f.catalog.startedJobs().map(\.id) == [first.id, second.id, third.id])
    }

    @Test("startedJobs lists jobs left STARTED; completeJob marks COMPLETED with its end time")
    func startedAndCompleted() throws {
        let f = try Self.fixture("web-1", "db-1")
        let a = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1")])
        f.clock.advance(seconds: 1)
        let b = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("db-1")])
        #expect(try f.catalog.startedJobs().isEmpty, "PENDING jobs are not STARTED")
        _ = try f.catalog.claimNextJob()
        _ = try f.catalog.claimNextJob()
        f.clock.advance(seconds: 30)
        try f.catalog.completeJob(a.id)
        let done = try #require(try f.catalog.job(id: a.id))
        #expect(done.status == .completed)
        #expect(done.endedAt == f.clock.now())
        #expect(done.startedAt == Timestamp(seconds: CatalogFixture.start.seconds + 1))
        #expect(try f.catalog.startedJobs().map(\.id) == [b.id])

        // A restart finds the same.
        try f.reopen()
        #expect(try f.catalog.startedJobs().map(\.id) == [b.id])
        #expect(try f.catalog.claimNextJob() == nil)
    }

    @Test("jobs(limit:) lists the newest first")
    func jobsNewestFirst() throws {
        let f = try Self.fixture("web-1")
        var ids: [String] = []
        for _ in 0..<4 {
            ids.append(try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1")]).id)
            f.clock.advance(seconds: 1)
        }
        #expect(try f.catalog.jobs().map(\.id) == ids.reversed())
        #expect(try f.catalog.jobs(limit: 2).map(\.id) == [ids[3], ids[2]])
        #expect(try f.catalog.jobs(limit: 0).isEmpty)
        #expect(try f.catalog.job(id: "job-0000000000000000") == nil)
    }

    // MARK: - Job log and items

    @Test("job events: appended in order with the clock's time, read after an id, kept per job")
    func jobEvents() throws {
        let f = try Self.fixture("web-1", "db-1")
        let job = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1")])
        let other = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("db-1")])
        let instance = job.items[0].instance
        try f.catalog.addJobEvent(job: job.id, .jobStart, detail: "TEST launch of web-1")
        try f.catalog.addJobEvent(job: other.id, .jobStart, detail: "other job")
        f.clock.advance(seconds: 2)
        try f.catalog.addJobEvent(job: job.id, .snapshotStart, machine: "web-1", instance: instance, detail: "pinning")
        f.clock.advance(seconds: 3)
        try f.catalog.addJobEvent(job: job.id, .launchFailed, machine: "web-1", instance: instance, detail: "QEMU exited", error: "launch.qemu-exited")

        let events = try f.catalog.jobEvents(job: job.id)
        #expect(events.map(\.kind) == ["JOB_START", "SNAPSHOT_START", "LAUNCH_FAILED"])
        #expect(events.map(\.detail) == ["TEST launch of web-1", "pinning", "QEMU exited"])
        #expect(events.allSatisfy { $0.job == job.id })
        #expect(events.map(\.time.seconds) == [0, 2, 5].map { CatalogFixture.start.seconds + $0 })
        #expect(events[0].machine == nil && events[0].instance == nil && events[0].error == nil)
        #expect(events[1].machine == "web-1" && events[1].instance == instance && events[1].error == nil)
        #expect(events[2].error == "launch.qemu-exited")
        #expect(events.map(\.id) == events.map(\.id).sorted())
        #expect(Set(events.map(\.id)).count == 3)

        // Following a log: only what came after the last id seen.
        #expect(try f.catalog.jobEvents(job: job.id, after: events[0].id) == Array(events[1...]))
        #expect(try f.catalog.jobEvents(job: job.id, after: events[2].id).isEmpty)
        try f.catalog.addJobEvent(job: job.id, .jobEnd, detail: "1 FAILED")
        #expect(try f.catalog.jobEvents(job: job.id, after: events[2].id).map(\.kind) == ["JOB_END"])

        #expect(try f.catalog.jobEvents(job: other.id).map(\.detail) == ["other job"])
        #expect(try f.catalog.jobEvents(job: "job-ffffffffffffffff").isEmpty)
    }

    @Test("setJobItem records a machine's outcome; a later call without RTO or error keeps them")
    func jobItems() throws {
        let f = try Self.fixture("web-1", "db-1")
        let job = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1"), Self.target("db-1")])
        let (web, db) = (job.items[0].instance, job.items[1].instance)
        try f.catalog.setJobItem(job: job.id, instance: web, status: .inProgress)
        var items = try #require(try f.catalog.job(id: job.id)).items
        #expect(items.map(\.launchStatus) == [.inProgress, .pending])

        try f.catalog.setJobItem(job: job.id, instance: web, status: .launched, rtoNanoseconds: 42_500_000_000)
        try f.catalog.setJobItem(job: job.id, instance: db, status: .failed, error: "acceptance check tcp:22 failed")
        items = try #require(try f.catalog.job(id: job.id)).items
        #expect(items[0].launchStatus == .launched)
        #expect(items[0].rtoNanoseconds == 42_500_000_000)
        #expect(items[0].rtoSeconds == 42.5)
        #expect(items[0].error == nil)
        #expect(items[1].launchStatus == .failed)
        #expect(items[1].error == "acceptance check tcp:22 failed")
        #expect(items[1].rtoNanoseconds == nil && items[1].rtoSeconds == nil)

        // COALESCE: the status moves, the measured RTO and the error stay.
        try f.catalog.setJobItem(job: job.id, instance: web, status: .terminated)
        try f.catalog.setJobItem(job: job.id, instance: db, status: .failed)
        items = try #require(try f.catalog.job(id: job.id)).items
        #expect(items[0].launchStatus == .terminated && items[0].rtoNanoseconds == 42_500_000_000)
        #expect(items[1].error == "acceptance check tcp:22 failed")

        // An instance of another job is not touched.
        let other = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1")])
        try f.catalog.setJobItem(job: other.id, instance: web, status: .failed)
        #expect(try f.catalog.job(id: job.id)?.items[0].launchStatus == .terminated)
        #expect(try f.catalog.job(id: other.id)?.items[0].launchStatus == .pending)
    }

    // MARK: - Instances

    @Test("setInstanceState: RUNNING stamps launched_at once, FAILED and TERMINATED stamp terminated_at, runtime is kept")
    func instanceStates() throws {
        let f = try Self.fixture("web-1", "db-1")
        let job = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1"), Self.target("db-1")])
        let (web, db) = (job.items[0].instance, job.items[1].instance)

        f.clock.advance(seconds: 5)
        try f.catalog.setInstanceState(web, .launching, reason: nil)
        var record = try #require(try f.catalog.instance(id: web))
        #expect(record.state == .launching)
        #expect(record.launchedAt == nil && record.terminatedAt == nil)

        f.clock.advance(seconds: 5)
        try f.catalog.setInstanceState(web, .launching, reason: "checks running", runtime: #"{"launcher":"qemu","pid":42}"#)
        f.clock.advance(seconds: 10)
        let runningAt = f.clock.now()
        try f.catalog.setInstanceState(web, .running, reason: "checks passed")
        record = try #require(try f.catalog.instance(id: web))
        #expect(record.state == .running)
        #expect(record.stateReason == "checks passed")
        #expect(record.runtime == #"{"launcher":"qemu","pid":42}"#, "a nil runtime keeps the recorded one")
        #expect(record.launchedAt == runningAt)
        #expect(record.terminatedAt == nil)

        // Running again (a restarted server sees it running) keeps the first launch time.
        f.clock.advance(seconds: 60)
        try f.catalog.setInstanceState(web, .stopped, reason: "the machine stopped by itself")
        try f.catalog.setInstanceState(web, .running, reason: nil, runtime: #"{"launcher":"qemu","pid":43}"#)
        record = try #require(try f.catalog.instance(id: web))
        #expect(record.launchedAt == runningAt)
        #expect(record.stateReason == nil)
        #expect(record.runtime == #"{"launcher":"qemu","pid":43}"#)

        f.clock.advance(seconds: 60)
        try f.catalog.setInstanceState(web, .terminating, reason: "terminate job")
        #expect(try f.catalog.instance(id: web)?.terminatedAt == nil)
        f.clock.advance(seconds: 1)
        try f.catalog.setInstanceState(web, .terminated, reason: "terminated")
        record = try #require(try f.catalog.instance(id: web))
        #expect(record.state == .terminated)
        #expect(record.terminatedAt == f.clock.now())
        #expect(record.launchedAt == runningAt)

        try f.catalog.setInstanceState(db, .failed, reason: "QEMU exited at once")
        let failed = try #require(try f.catalog.instance(id: db))
        #expect(failed.state == .failed)
        #expect(failed.stateReason == "QEMU exited at once")
        #expect(failed.terminatedAt == f.clock.now())
        #expect(failed.launchedAt == nil)
    }

    @Test("instances(): newest first, only those holding resources unless includeTerminated")
    func instanceListing() throws {
        let f = try Self.fixture("web-1", "db-1", "cache-1")
        let a = try Self.instance(f, "web-1", state: .running)
        f.clock.advance(seconds: 1)
        let b = try Self.instance(f, "db-1", state: .failed)
        f.clock.advance(seconds: 1)
        let c = try Self.instance(f, "cache-1", state: .stopped)
        f.clock.advance(seconds: 1)
        let d = try Self.instance(f, "web-1", state: .terminated)
        f.clock.advance(seconds: 1)
        let e = try Self.instance(f, "db-1", state: .pending)
        #expect(try f.catalog.instances().map(\.id) == [e.id, c.id, a.id])
        #expect(try f.catalog.instances(includeTerminated: true).map(\.id) == [e.id, d.id, c.id, b.id, a.id])
        #expect(try f.catalog.instance(id: "ri-0000000000000000") == nil)
    }

    // MARK: - Terminate jobs

    @Test("a TERMINATE job takes RUNNING and STOPPED instances, marks them TERMINATING, names each once")
    func createTerminateJob() throws {
        let f = try Self.fixture("web-1", "db-1")
        let running = try Self.instance(f, "web-1", state: .running)
        let stopped = try Self.instance(f, "db-1", state: .stopped, mode: .recovery)
        f.clock.advance(seconds: 100)
        let job = try f.catalog.createTerminateJob(instances: [stopped.id, running.id, stopped.id])
        #expect(Self.isIdentifier(job.id, prefix: "job"))
        #expect(job.type == .terminate)
        #expect(job.initiatedBy == .terminateRecoveryInstances)
        #expect(job.mode == nil)
        #expect(job.status == .pending)
        #expect(job.createdAt == f.clock.now())
        #expect(job.items.count == 2)
        #expect(Set(job.items.map(\.instance)) == [running.id, stopped.id])
        for item in job.items {
            let original = item.instance == running.id ? running : stopped
            #expect(item.machine == original.machine)
            #expect(item.point == original.point)
            #expect(item.pointCaptureTime == original.pointCaptureTime)
            #expect(item.launchStatus == .pending)
            let now = try #require(try f.catalog.instance(id: item.instance))
            #expect(now.state == .terminating)
            #expect(now.stateReason == "terminate job \(job.id)")
            #expect(now.job == original.job, "the instance still names the job that launched it")
        }
        #expect(try f.catalog.jobs().first?.id == job.id)
    }

    @Test("terminate errors: none named, unknown, still launching, already terminating, already gone")
    func createTerminateJobErrors() throws {
        let f = try Self.fixture("web-1", "db-1", "cache-1")
        let pending = try Self.instance(f, "web-1", state: .pending)
        let launching = try Self.instance(f, "web-1", state: .launching)
        let running = try Self.instance(f, "db-1", state: .running)
        let failed = try Self.instance(f, "cache-1", state: .failed)
        let terminated = try Self.instance(f, "cache-1", state: .terminated)
        let jobsBefore = try f.catalog.jobs().count

        expectError("instance.none") { _ = try f.catalog.createTerminateJob(instances: []) }
        let unknown = expectError("instance.unknown") { _ = try f.catalog.createTerminateJob(instances: ["ri-0000000000000001"]) }
        #expect(unknown?.message.contains("ri-0000000000000001") == true)
        let busy = expectError("instance.busy") { _ = try f.catalog.createTerminateJob(instances: [pending.id]) }
        #expect(busy?.message.contains(pending.job) == true)
        expectError("instance.busy") { _ = try f.catalog.createTerminateJob(instances: [launching.id]) }
        let gone = expectError("instance.terminated") { _ = try f.catalog.createTerminateJob(instances: [failed.id]) }
        #expect(gone?.message.contains("FAILED") == true)
        expectError("instance.terminated") { _ = try f.catalog.createTerminateJob(instances: [terminated.id]) }

        // One bad instance fails the whole job: the good one is not left TERMINATING.
        expectError("instance.terminated") { _ = try f.catalog.createTerminateJob(instances: [running.id, terminated.id]) }
        #expect(try f.catalog.instance(id: running.id)?.state == .running)
        #expect(try f.catalog.jobs().count == jobsBefore)

        _ = try f.catalog.createTerminateJob(instances: [running.id])
        let again = expectError("instance.busy") { _ = try f.catalog.createTerminateJob(instances: [running.id]) }
        #expect(again?.message.contains("already being terminated") == true)
        #expect(try f.catalog.jobs().count == jobsBefore + 1)
    }

    // MARK: - DR lifecycle

    @Test("a passed drill: TESTED_RECENTLY with its date, shown TEST_OVERDUE after 30 days")
    func passedDrill() throws {
        let f = try Self.fixture("web-1")
        f.clock.advance(seconds: 3600)
        let drillTime = f.clock.now()
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .test, passed: true)
        let machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.drLifecycle == .testedRecently)
        #expect(machine.lastDrillAt == drillTime)
        #expect(machine.lastDrillPassedAt == drillTime)
        #expect(machine.effectiveLifecycle(now: drillTime) == .testedRecently)
        #expect(machine.effectiveLifecycle(now: Timestamp(seconds: drillTime.seconds + 30 * 86_400)) == .testedRecently)
        #expect(machine.effectiveLifecycle(now: Timestamp(seconds: drillTime.seconds + 31 * 86_400)) == .testOverdue)
        // Stored as TESTED_RECENTLY all along: the age is applied when shown.
        f.clock.advance(seconds: 31 * 86_400)
        #expect(try f.catalog.machine(named: "web-1")?.drLifecycle == .testedRecently)
    }

    @Test("a failed drill: TEST_FAILED, the failure dated, the last passed drill kept; a later pass recovers")
    func failedDrill() throws {
        let f = try Self.fixture("web-1")
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .test, passed: true)
        let passedAt = f.clock.now()
        f.clock.advance(seconds: 86_400)
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .test, passed: false)
        var machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.drLifecycle == .testFailed)
        #expect(machine.lastDrillAt == f.clock.now())
        #expect(machine.lastDrillPassedAt == passedAt)
        #expect(machine.effectiveLifecycle(now: Timestamp(seconds: f.clock.now().seconds + 100 * 86_400)) == .testFailed)

        f.clock.advance(seconds: 60)
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .test, passed: true)
        machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.drLifecycle == .testedRecently)
        #expect(machine.lastDrillPassedAt == f.clock.now())
    }

    @Test("a recovery launch: RECOVERY_LAUNCHED when it passed, no change when it failed; drills leave no date")
    func recoveryLaunch() throws {
        let f = try Self.fixture("web-1", "db-1")
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .recovery, passed: false)
        var web = try #require(try f.catalog.machine(named: "web-1"))
        #expect(web.drLifecycle == .notTested)
        #expect(web.lastDrillAt == nil)

        try f.catalog.recordLaunchOutcome(machine: "db-1", mode: .test, passed: false)
        try f.catalog.recordLaunchOutcome(machine: "db-1", mode: .recovery, passed: false)
        #expect(try f.catalog.machine(named: "db-1")?.drLifecycle == .testFailed, "a failed recovery keeps the lifecycle")

        f.clock.advance(seconds: 10)
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .recovery, passed: true)
        web = try #require(try f.catalog.machine(named: "web-1"))
        #expect(web.drLifecycle == .recoveryLaunched)
        #expect(web.lastDrillAt == nil && web.lastDrillPassedAt == nil, "a recovery is not a drill")
        #expect(web.effectiveLifecycle(now: Timestamp(seconds: f.clock.now().seconds + 100 * 86_400)) == .recoveryLaunched)
    }

    @Test("a failed drill after a recovery launch keeps RECOVERY_LAUNCHED")
    func failedDrillAfterRecoveryKeepsLifecycle() throws {
        let f = try Self.fixture("web-1")
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .recovery, passed: true)
        f.clock.advance(seconds: 60)
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .test, passed: false)
        #expect(try f.catalog.machine(named: "web-1")?.drLifecycle == .recoveryLaunched)
    }

    @Test("a failed drill after a recovery launch still dates the drill (lastDrillAt: 'when the last drill ended, passed or failed')")
    func failedDrillAfterRecoveryIsDated() throws {
        let f = try Self.fixture("web-1")
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .recovery, passed: true)
        f.clock.advance(seconds: 60)
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .test, passed: false)
        #expect(try f.catalog.machine(named: "web-1")?.lastDrillAt == f.clock.now())
    }

    @Test("launch state survives a reopen")
    func survivesReopen() throws {
        let f = try Self.fixture("web-1")
        let job = try f.catalog.createLaunchJob(mode: .test, targets: [Self.target("web-1")])
        let instance = job.items[0].instance
        _ = try f.catalog.claimNextJob()
        try f.catalog.addJobEvent(job: job.id, .jobStart, detail: "start")
        try f.catalog.setJobItem(job: job.id, instance: instance, status: .launched, rtoNanoseconds: 5)
        try f.catalog.setInstanceState(instance, .running, reason: "ok", runtime: "{}")
        try f.catalog.recordLaunchOutcome(machine: "web-1", mode: .test, passed: true)
        let job1 = try f.catalog.job(id: job.id)
        let instance1 = try f.catalog.instance(id: instance)
        let events1 = try f.catalog.jobEvents(job: job.id)
        let machine1 = try f.catalog.machine(named: "web-1")
        try f.reopen()
        #expect(try f.catalog.job(id: job.id) == job1)
        #expect(try f.catalog.instance(id: instance) == instance1)
        #expect(try f.catalog.jobEvents(job: job.id) == events1)
        #expect(try f.catalog.machine(named: "web-1") == machine1)
    }
}
