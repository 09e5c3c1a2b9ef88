// Launch vocabulary (DESIGN §2, DRS's names): modes, job and launch states, recovery instances, the DR lifecycle.

/// TEST is a drill on a network with no route out; RECOVERY is failover onto the configured recovery network.
public enum LaunchMode: String, Sendable, Codable, CaseIterable {
    case test = "TEST"
    case recovery = "RECOVERY"
}

/// What a job does.
public enum JobType: String, Sendable, Codable {
    case launch = "LAUNCH"
    case terminate = "TERMINATE"
}

/// Who asked for the job, with DRS's `initiatedBy` names.
public enum JobInitiator: String, Sendable, Codable {
    case startDrill = "START_DRILL"
    case startRecovery = "START_RECOVERY"
    case terminateRecoveryInstances = "TERMINATE_RECOVERY_INSTANCES"
}

/// A job is PENDING until the server picks it up, STARTED while it runs, COMPLETED when every machine is done
/// (each machine's own outcome is its `LaunchStatus`).
public enum JobStatus: String, Sendable, Codable {
    case pending = "PENDING"
    case started = "STARTED"
    case completed = "COMPLETED"
}

/// One machine's outcome in a job.
public enum LaunchStatus: String, Sendable, Codable {
    case pending = "PENDING"
    case inProgress = "IN_PROGRESS"
    /// Started and its acceptance checks passed.
    case launched = "LAUNCHED"
    case failed = "FAILED"
    /// The instance was terminated (the outcome of a TERMINATE job).
    case terminated = "TERMINATED"
}

/// A recovery instance's life: PENDING (job queued) → LAUNCHING → RUNNING → TERMINATING → TERMINATED.
/// STOPPED: the machine stopped by itself (its disks and point stay until terminated). FAILED: the launch
/// failed and everything it had taken was released.
public enum InstanceState: String, Sendable, Codable {
    case pending = "PENDING"
    case launching = "LAUNCHING"
    case running = "RUNNING"
    case stopped = "STOPPED"
    case failed = "FAILED"
    case terminating = "TERMINATING"
    case terminated = "TERMINATED"

    /// Still holding disks or a point: terminate releases them.
    public var holdsResources: Bool {
        switch self {
        case .pending, .launching, .running, .stopped, .terminating: return true
        case .failed, .terminated: return false
        }
    }
}

/// Job log events, with DRS's names.
public enum JobEventKind: String, Sendable, Codable, CaseIterable {
    case jobStart = "JOB_START"
    case serverSkipped = "SERVER_SKIPPED"
    case snapshotStart = "SNAPSHOT_START"
    case snapshotEnd = "SNAPSHOT_END"
    case snapshotFail = "SNAPSHOT_FAIL"
    case conversionStart = "CONVERSION_START"
    case conversionEnd = "CONVERSION_END"
    case conversionFail = "CONVERSION_FAIL"
    case launchStart = "LAUNCH_START"
    /// Lifeboat's additions: what the launcher said; the machine was started (the checks run next); a check
    /// passed or failed; all checks passed (with the RTO).
    case launcherOutput = "LAUNCHER_OUTPUT"
    case machineStarted = "MACHINE_STARTED"
    /// The end of the machine's serial console, captured into the job log once the checks are done.
    case console = "CONSOLE"
    case checkPassed = "CHECK_PASSED"
    case checkFailed = "CHECK_FAILED"
    case launchEnd = "LAUNCH_END"
    case launchFailed = "LAUNCH_FAILED"
    case cleanupStart = "CLEANUP_START"
    case cleanupEnd = "CLEANUP_END"
    case cleanupFail = "CLEANUP_FAIL"
    case jobEnd = "JOB_END"
}

/// Per machine: has it been proven recoverable, and recently?
public enum DRLifecycle: String, Sendable, Codable {
    case notTested = "NOT_TESTED"
    case testedRecently = "TESTED_RECENTLY"
    case testOverdue = "TEST_OVERDUE"
    case testFailed = "TEST_FAILED"
    case recoveryLaunched = "RECOVERY_LAUNCHED"

    /// A drill older than this makes TESTED_RECENTLY read as TEST_OVERDUE.
    public static let testInterval: Int64 = 30 * 86_400

    /// What to show now for a stored state and the time of the last passed drill; `overdueAfter` seconds (the
    /// `drillOverdueDays` setting; default 30 days) after it, TESTED_RECENTLY reads TEST_OVERDUE.
    public static func effective(
        stored: DRLifecycle, lastTestPassed: Timestamp?, now: Timestamp, overdueAfter: Int64 = testInterval
    ) -> DRLifecycle {
        guard stored == .testedRecently, let lastTestPassed else { return stored }
        return now.nanoseconds - lastTestPassed.nanoseconds > overdueAfter * 1_000_000_000 ? .testOverdue : stored
    }
}

/// A prefix and a random suffix: `job-3f9a…`, `ri-81c2…` (16 hex digits).
public enum LaunchIdentifiers {
    public static func make(_ prefix: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return prefix + "-" + String(repeating: "0", count: 16 - hex.count) + hex
    }
}
