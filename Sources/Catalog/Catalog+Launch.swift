import GRDB
public import LifeboatCore

// Launch: per-machine launch settings and applications, jobs (a queue the server works through), their items
// and event log, recovery instances, the DR lifecycle. The command line creates jobs; the server's launch
// service claims and runs them.

extension Catalog {
    // MARK: - Settings and applications

    /// Replaces a machine's launch settings (validated first).
    ///
    /// - Throws: `machine.unknown`, `launch.bad-settings`.
    public func setLaunchSettings(machine: String, _ settings: LaunchSettings) throws {
        try Names.validate(machine, kind: "machine")
        try settings.validate()
        let json = try LaunchSettingsCoding.encode(settings)
        try write { db in
            try Catalog.requireActive(db, machine)
            try db.execute(sql: "UPDATE machines SET launch_settings = ? WHERE name = ?", arguments: [json, machine])
        }
    }

    /// Puts a machine in an application (nil: in none), creating the application if it does not exist yet.
    public func setApplication(machine: String, _ application: String?) throws {
        try Names.validate(machine, kind: "machine")
        if let application { try Names.validate(application, kind: "application") }
        try write { db in
            try Catalog.requireActive(db, machine)
            if let application {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO applications (name, created_at) VALUES (?, ?)",
                    arguments: [application, self.now.nanoseconds]
                )
            }
            try db.execute(sql: "UPDATE machines SET application = ? WHERE name = ?", arguments: [application, machine])
        }
    }

    /// The active machines of an application, sorted by name.
    ///
    /// - Throws: `application.unknown` when no active machine belongs to it.
    public func machines(application: String) throws -> [MachineRecord] {
        try Names.validate(application, kind: "application")
        let members = try machines().filter { $0.application == application }
        guard !members.isEmpty else {
            throw LifeboatError(
                "application.unknown",
                "no machine belongs to application \(application): add machines with `lifeboat machines configure NAME --application \(application)`"
            )
        }
        return members
    }

    // MARK: - Creating jobs

    /// Queues a LAUNCH job: one PENDING item and one PENDING recovery instance per target, in one transaction —
    /// with who asked and the incident it is made under, checked open in the same transaction (so the launch
    /// service never sees the job without them, and a closed incident queues nothing).
    ///
    /// - Throws: `launch.no-machines`, `launch.duplicate-machine`, `machine.unknown`, `incident.unknown`,
    ///   `incident.closed`.
    public func createLaunchJob(
        mode: LaunchMode, targets: [LaunchTarget], incident: String? = nil, requestedBy: String? = nil
    ) throws -> JobRecord {
        guard !targets.isEmpty else {
            throw LifeboatError("launch.no-machines", "a launch needs at least one machine")
        }
        var seen = Set<String>()
        for target in targets {
            try Names.validate(target.machine, kind: "machine")
            guard seen.insert(target.machine).inserted else {
                throw LifeboatError("launch.duplicate-machine", "machine \(target.machine) is named twice in one launch")
            }
        }
        let id = LaunchIdentifiers.make("job")
        try write { db in
            let now = self.now
            if let incident {
                let record = try Catalog.requireIncident(db, incident)
                guard record.isOpen else { throw Catalog.closedIncident(record) }
            }
            try db.execute(
                sql: """
                    INSERT INTO jobs (id, type, initiated_by, mode, status, created_at, incident, requested_by)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    id, JobType.launch.rawValue,
                    (mode == .test ? JobInitiator.startDrill : .startRecovery).rawValue, mode.rawValue,
                    JobStatus.pending.rawValue, now.nanoseconds, incident, requestedBy,
                ]
            )
            for (position, target) in targets.enumerated() {
                try Catalog.requireActive(db, target.machine)
                let settings = try Catalog.fetchMachine(db, target.machine)?.launchSettings ?? LaunchSettings()
                let instance = LaunchIdentifiers.make("ri")
                try Catalog.insertItem(db, job: id, instance: instance, machine: target.machine, position: position,
                                       point: target.point, captureTime: target.pointCaptureTime)
                try db.execute(
                    sql: """
                        INSERT INTO recovery_instances (id, machine, job, mode, point, point_capture_time, state, launcher, created_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        instance, target.machine, id, mode.rawValue, Int64(bitPattern: target.point),
                        target.pointCaptureTime.nanoseconds, InstanceState.pending.rawValue,
                        settings.launcher.rawValue, now.nanoseconds,
                    ]
                )
            }
        }
        return try job(id: id)!
    }

    /// Queues a TERMINATE job for recovery instances and marks them TERMINATING.
    ///
    /// - Throws: `instance.unknown`, `instance.terminated` (nothing left to release), `instance.busy` (its launch
    ///   job is still running, or a terminate job already has it).
    public func createTerminateJob(instances: [String], requestedBy: String? = nil) throws -> JobRecord {
        guard !instances.isEmpty else {
            throw LifeboatError("instance.none", "name at least one recovery instance to terminate")
        }
        let id = LaunchIdentifiers.make("job")
        try write { db in
            let now = self.now
            try db.execute(
                sql: "INSERT INTO jobs (id, type, initiated_by, status, created_at, requested_by) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [
                    id, JobType.terminate.rawValue, JobInitiator.terminateRecoveryInstances.rawValue,
                    JobStatus.pending.rawValue, now.nanoseconds, requestedBy,
                ]
            )
            var seen = Set<String>()
            for (position, instanceID) in instances.filter({ seen.insert($0).inserted }).enumerated() {
                guard let instance = try Catalog.fetchInstance(db, instanceID) else {
                    throw LifeboatError("instance.unknown", "there is no recovery instance \(instanceID): list them with `lifeboat instances`")
                }
                switch instance.state {
                case .terminated, .failed:
                    throw LifeboatError("instance.terminated", "recovery instance \(instanceID) is already \(instance.state.rawValue)")
                case .pending, .launching:
                    throw LifeboatError(
                        "instance.busy",
                        "recovery instance \(instanceID) is still being launched by job \(instance.job): terminate it when that job completes (`lifeboat jobs \(instance.job) --follow`)"
                    )
                case .terminating:
                    throw LifeboatError("instance.busy", "recovery instance \(instanceID) is already being terminated")
                case .running, .stopped:
                    break
                }
                try Catalog.insertItem(db, job: id, instance: instanceID, machine: instance.machine, position: position,
                                       point: instance.point, captureTime: instance.pointCaptureTime)
                try db.execute(
                    sql: "UPDATE recovery_instances SET state = ?, state_reason = ? WHERE id = ?",
                    arguments: [InstanceState.terminating.rawValue, "terminate job \(id)", instanceID]
                )
            }
        }
        return try job(id: id)!
    }

    // MARK: - Running jobs (the launch service)

    /// Takes the oldest PENDING job and marks it STARTED; nil when none waits.
    public func claimNextJob() throws -> JobRecord? {
        let id: String? = try write { db in
            guard
                let id = try String.fetchOne(
                    db,
                    sql: "SELECT id FROM jobs WHERE status = ? ORDER BY created_at, rowid LIMIT 1",
                    arguments: [JobStatus.pending.rawValue]
                )
            else { return nil }
            try db.execute(
                sql: "UPDATE jobs SET status = ?, started_at = ? WHERE id = ?",
                arguments: [JobStatus.started.rawValue, self.now.nanoseconds, id]
            )
            return id
        }
        return try id.flatMap { try job(id: $0) }
    }

    /// Jobs left STARTED (a server that stopped in the middle of them).
    public func startedJobs() throws -> [JobRecord] {
        let ids = try read { db in
            try String.fetchAll(db, sql: "SELECT id FROM jobs WHERE status = ? ORDER BY created_at", arguments: [JobStatus.started.rawValue])
        }
        return try ids.compactMap { try job(id: $0) }
    }

    /// Marks a job COMPLETED.
    public func completeJob(_ id: String) throws {
        try write { db in
            try db.execute(
                sql: "UPDATE jobs SET status = ?, ended_at = ? WHERE id = ?",
                arguments: [JobStatus.completed.rawValue, self.now.nanoseconds, id]
            )
        }
    }

    /// Appends a line to a job's log.
    public func addJobEvent(
        job: String,
        _ kind: JobEventKind,
        machine: String? = nil,
        instance: String? = nil,
        detail: String,
        error: String? = nil
    ) throws {
        try write { db in
            try db.execute(
                sql: "INSERT INTO job_events (job, time, kind, machine, instance, detail, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [job, self.now.nanoseconds, kind.rawValue, machine, instance, detail, error]
            )
        }
    }

    /// Records one machine's outcome in a job.
    public func setJobItem(
        job: String,
        instance: String,
        status: LaunchStatus,
        rtoNanoseconds: Int64? = nil,
        error: String? = nil
    ) throws {
        try write { db in
            try db.execute(
                sql: """
                    UPDATE job_items SET launch_status = ?, rto_ns = COALESCE(?, rto_ns), error = COALESCE(?, error)
                    WHERE job = ? AND instance = ?
                    """,
                arguments: [status.rawValue, rtoNanoseconds, error, job, instance]
            )
        }
    }

    /// Moves a recovery instance to `state` (RUNNING stamps `launched_at`; FAILED and TERMINATED stamp
    /// `terminated_at`), optionally recording the launcher's runtime description.
    public func setInstanceState(_ id: String, _ state: InstanceState, reason: String?, runtime: String? = nil) throws {
        try write { db in
            let now = self.now.nanoseconds
            try db.execute(
                sql: """
                    UPDATE recovery_instances SET state = ?, state_reason = ?, runtime = COALESCE(?, runtime),
                        launched_at = CASE WHEN ? THEN COALESCE(launched_at, ?) ELSE launched_at END,
                        terminated_at = CASE WHEN ? THEN ? ELSE terminated_at END
                    WHERE id = ?
                    """,
                arguments: [
                    state.rawValue, reason, runtime, state == .running, now,
                    state == .failed || state == .terminated, now, id,
                ]
            )
        }
    }

    /// Records the outcome of a launch for the machine's DR lifecycle: a passed drill → TESTED_RECENTLY (with
    /// its date), a failed drill → TEST_FAILED, a recovery launch → RECOVERY_LAUNCHED. A failed recovery launch
    /// leaves the lifecycle as it was.
    public func recordLaunchOutcome(machine: String, mode: LaunchMode, passed: Bool) throws {
        try write { db in
            let now = self.now.nanoseconds
            switch (mode, passed) {
            case (.test, true):
                try db.execute(
                    sql: "UPDATE machines SET dr_lifecycle = ?, last_drill_at = ?, last_drill_passed_at = ? WHERE name = ?",
                    arguments: [DRLifecycle.testedRecently.rawValue, now, now, machine]
                )
            case (.test, false):
                // A failed drill is dated; it does not hide that a recovery was launched.
                try db.execute(
                    sql: "UPDATE machines SET last_drill_at = ?, dr_lifecycle = CASE WHEN dr_lifecycle = ? THEN dr_lifecycle ELSE ? END WHERE name = ?",
                    arguments: [now, DRLifecycle.recoveryLaunched.rawValue, DRLifecycle.testFailed.rawValue, machine]
                )
            case (.recovery, true):
                try db.execute(
                    sql: "UPDATE machines SET dr_lifecycle = ? WHERE name = ?",
                    arguments: [DRLifecycle.recoveryLaunched.rawValue, machine]
                )
            case (.recovery, false):
                break
            }
        }
    }

    // MARK: - Reading

    public func job(id: String) throws -> JobRecord? {
        try read { db in try Catalog.fetchJob(db, id) }
    }

    /// The newest `limit` jobs, newest first.
    public func jobs(limit: Int = 50) throws -> [JobRecord] {
        try read { db in
            let ids = try String.fetchAll(
                db,
                sql: "SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?",
                arguments: [max(0, limit)]
            )
            return try ids.compactMap { try Catalog.fetchJob(db, $0) }
        }
    }

    /// One page of jobs, newest first (of one status when given), each with its incident and requester, and how
    /// many there are: paged by SQLite, so a page costs the same however long the history.
    public func jobsPage(status: JobStatus?, offset: Int, limit: Int) throws
        -> (jobs: [(job: JobRecord, incident: String?, requestedBy: String?)], total: Int)
    {
        try read { db in
            let condition = status == nil ? "" : "WHERE status = ?"
            let filter: [(any DatabaseValueConvertible)?] = status.map { [$0.rawValue] } ?? []
            let total = try Int.fetchOne(db, sql: "SELECT count(*) FROM jobs \(condition)", arguments: StatementArguments(filter)) ?? 0
            let rows = try Row.fetchAll(
                db,
                sql: "SELECT id, incident, requested_by FROM jobs \(condition) ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                arguments: StatementArguments(filter + [max(0, limit), max(0, offset)])
            )
            let jobs = try rows.compactMap { row -> (job: JobRecord, incident: String?, requestedBy: String?)? in
                guard let job = try Catalog.fetchJob(db, row["id"]) else { return nil }
                return (job, row["incident"], row["requested_by"])
            }
            return (jobs, total)
        }
    }

    /// A job's log after event `after` (0: from the start), oldest first.
    public func jobEvents(job: String, after: Int64 = 0) throws -> [JobEvent] {
        try read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT \(JobEvent.columns) FROM job_events WHERE job = ? AND id > ? ORDER BY id",
                arguments: [job, after]
            ).map(JobEvent.init(row:))
        }
    }

    public func instance(id: String) throws -> InstanceRecord? {
        try read { db in try Catalog.fetchInstance(db, id) }
    }

    /// Recovery instances, newest first: those still holding resources, or all with `includeTerminated`.
    public func instances(includeTerminated: Bool = false) throws -> [InstanceRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT \(InstanceRecord.columns) FROM recovery_instances ORDER BY created_at DESC, id")
                .map(InstanceRecord.init(row:))
                .filter { includeTerminated || $0.state.holdsResources }
        }
    }

    /// A PENDING item of a job, inside the caller's transaction.
    static func insertItem(
        _ db: Database, job: String, instance: String, machine: String, position: Int, point: UInt64, captureTime: Timestamp
    ) throws {
        try db.execute(
            sql: """
                INSERT INTO job_items (job, instance, machine, position, point, point_capture_time, launch_status)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                job, instance, machine, position, Int64(bitPattern: point), captureTime.nanoseconds,
                LaunchStatus.pending.rawValue,
            ]
        )
    }

    static func fetchJob(_ db: Database, _ id: String) throws -> JobRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT \(JobRecord.columns) FROM jobs WHERE id = ?", arguments: [id]) else {
            return nil
        }
        let items = try Row.fetchAll(
            db,
            sql: "SELECT \(JobItem.columns) FROM job_items WHERE job = ? ORDER BY position",
            arguments: [id]
        ).map(JobItem.init(row:))
        return JobRecord(row: row, items: items)
    }

    static func fetchInstance(_ db: Database, _ id: String) throws -> InstanceRecord? {
        try Row.fetchOne(db, sql: "SELECT \(InstanceRecord.columns) FROM recovery_instances WHERE id = ?", arguments: [id])
            .map(InstanceRecord.init(row:))
    }
}
