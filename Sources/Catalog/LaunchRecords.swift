import Foundation
import GRDB
public import LifeboatCore

/// One machine of a job: the recovery instance it launches (or terminates) and its outcome.
public struct JobItem: Sendable, Equatable {
    public var instance: String
    public var machine: String
    /// The recovery point launched (LAUNCH jobs).
    public var point: UInt64?
    public var pointCaptureTime: Timestamp?
    public var launchStatus: LaunchStatus
    /// Measured recovery time: the job's creation to the acceptance checks passing.
    public var rtoNanoseconds: Int64?
    public var error: String?

    public var rtoSeconds: Double? { rtoNanoseconds.map { Double($0) / 1e9 } }
}

/// A launch or terminate job.
public struct JobRecord: Sendable, Equatable {
    public var id: String
    public var type: JobType
    public var initiatedBy: JobInitiator
    public var mode: LaunchMode?
    public var status: JobStatus
    public var createdAt: Timestamp
    public var startedAt: Timestamp?
    public var endedAt: Timestamp?
    /// In the order given at creation.
    public var items: [JobItem]
}

/// One line of a job's log.
public struct JobEvent: Sendable, Equatable {
    public var id: Int64
    public var job: String
    public var time: Timestamp
    public var kind: String
    public var machine: String?
    public var instance: String?
    public var detail: String
    public var error: String?
}

/// A machine launched from a recovery point.
public struct InstanceRecord: Sendable, Equatable {
    public var id: String
    public var machine: String
    /// The job that launched it.
    public var job: String
    public var mode: LaunchMode
    public var point: UInt64
    public var pointCaptureTime: Timestamp
    public var state: InstanceState
    public var stateReason: String?
    /// `qemu` or `command`.
    public var launcher: String
    /// What the launcher recorded to reach and stop the machine (JSON), once started.
    public var runtime: String?
    public var createdAt: Timestamp
    public var launchedAt: Timestamp?
    public var terminatedAt: Timestamp?
}

/// A machine and the point to launch it from, resolved before the job is created.
public struct LaunchTarget: Sendable, Equatable {
    public var machine: String
    public var point: UInt64
    public var pointCaptureTime: Timestamp

    public init(machine: String, point: UInt64, pointCaptureTime: Timestamp) {
        self.machine = machine
        self.point = point
        self.pointCaptureTime = pointCaptureTime
    }
}

/// Launch settings as stored in the catalog: JSON with sorted keys.
public enum LaunchSettingsCoding {
    public static func encode(_ settings: LaunchSettings) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(settings), as: UTF8.self)
    }

    public static func decode(_ text: String) throws -> LaunchSettings {
        try JSONDecoder().decode(LaunchSettings.self, from: Data(text.utf8))
    }
}

extension JobRecord {
    static let columns = "id, type, initiated_by, mode, status, created_at, started_at, ended_at"

    init(row: Row, items: [JobItem]) {
        func time(_ column: String) -> Timestamp? { (row[column] as Int64?).map(Timestamp.init(nanoseconds:)) }
        self.init(
            id: row["id"],
            type: JobType(rawValue: row["type"]) ?? .launch,
            initiatedBy: JobInitiator(rawValue: row["initiated_by"]) ?? .startDrill,
            mode: (row["mode"] as String?).flatMap(LaunchMode.init(rawValue:)),
            status: JobStatus(rawValue: row["status"]) ?? .pending,
            createdAt: Timestamp(nanoseconds: row["created_at"]),
            startedAt: time("started_at"),
            endedAt: time("ended_at"),
            items: items
        )
    }
}

extension JobItem {
    static let columns = "job, instance, machine, position, point, point_capture_time, launch_status, rto_ns, error"

    init(row: Row) {
        self.init(
            instance: row["instance"],
            machine: row["machine"],
            point: (row["point"] as Int64?).map { UInt64(bitPattern: $0) },
            pointCaptureTime: (row["point_capture_time"] as Int64?).map(Timestamp.init(nanoseconds:)),
            launchStatus: LaunchStatus(rawValue: row["launch_status"]) ?? .pending,
            rtoNanoseconds: row["rto_ns"],
            error: row["error"]
        )
    }
}

extension JobEvent {
    static let columns = "id, job, time, kind, machine, instance, detail, error"

    init(row: Row) {
        self.init(
            id: row["id"],
            job: row["job"],
            time: Timestamp(nanoseconds: row["time"]),
            kind: row["kind"],
            machine: row["machine"],
            instance: row["instance"],
            detail: row["detail"],
            error: row["error"]
        )
    }
}

extension InstanceRecord {
    static let columns = """
        id, machine, job, mode, point, point_capture_time, state, state_reason, launcher, runtime, created_at,
        launched_at, terminated_at
        """

    init(row: Row) {
        func time(_ column: String) -> Timestamp? { (row[column] as Int64?).map(Timestamp.init(nanoseconds:)) }
        self.init(
            id: row["id"],
            machine: row["machine"],
            job: row["job"],
            mode: LaunchMode(rawValue: row["mode"]) ?? .test,
            point: UInt64(bitPattern: row["point"]),
            pointCaptureTime: Timestamp(nanoseconds: row["point_capture_time"]),
            state: InstanceState(rawValue: row["state"]) ?? .failed,
            stateReason: row["state_reason"],
            launcher: row["launcher"],
            runtime: row["runtime"],
            createdAt: Timestamp(nanoseconds: row["created_at"]),
            launchedAt: time("launched_at"),
            terminatedAt: time("terminated_at")
        )
    }
}
