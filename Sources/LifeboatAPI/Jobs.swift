/// `POST /launches`: launch recovery machines. Exactly one of `machines`, `application`, `all`.
public struct LaunchRequestDTO: Codable, Sendable, Equatable {
    /// TEST (a drill) or RECOVERY (failover).
    public var mode: String
    public var machines: [String]?
    public var application: String?
    public var all: Bool?
    /// The point for every machine: `latest` (default), a point id or an RFC 3339 time.
    public var point: String?
    /// A point per machine, overriding `point`.
    public var points: [String: String]?
    /// The open incident a recovery launch is made under (default: the only open incident).
    public var incident: String?
    public var dryRun: Bool?

    public init(
        mode: String, machines: [String]? = nil, application: String? = nil, all: Bool? = nil, point: String? = nil,
        points: [String: String]? = nil, incident: String? = nil, dryRun: Bool? = nil
    ) {
        self.mode = mode
        self.machines = machines
        self.application = application
        self.all = all
        self.point = point
        self.points = points
        self.incident = incident
        self.dryRun = dryRun
    }
}

/// `POST /terminations`: terminate recovery instances (one TERMINATE job).
public struct TerminateRequestDTO: Codable, Sendable, Equatable {
    public var instances: [String]
    public var dryRun: Bool?

    public init(instances: [String], dryRun: Bool? = nil) {
        self.instances = instances
        self.dryRun = dryRun
    }
}

/// A launch or terminate job.
public struct JobDTO: Codable, Sendable, Equatable {
    public var id: String
    /// LAUNCH or TERMINATE.
    public var type: String
    /// START_DRILL, START_RECOVERY, TERMINATE_RECOVERY_INSTANCES.
    public var initiatedBy: String
    public var mode: String?
    /// PENDING, STARTED, COMPLETED.
    public var status: String
    public var createdAt: String
    public var startedAt: String?
    public var endedAt: String?
    public var requestedBy: String?
    public var incident: String?
    public var items: [JobItemDTO]

    public init(
        id: String, type: String, initiatedBy: String, mode: String?, status: String, createdAt: String,
        startedAt: String?, endedAt: String?, requestedBy: String?, incident: String?, items: [JobItemDTO]
    ) {
        self.id = id
        self.type = type
        self.initiatedBy = initiatedBy
        self.mode = mode
        self.status = status
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.requestedBy = requestedBy
        self.incident = incident
        self.items = items
    }
}

public struct JobItemDTO: Codable, Sendable, Equatable {
    public var machine: String
    public var instance: String
    public var point: String?
    public var pointCaptureTime: String?
    /// PENDING, IN_PROGRESS, LAUNCHED, FAILED, TERMINATED.
    public var launchStatus: String
    public var rtoSeconds: Double?
    public var error: String?

    public init(
        machine: String, instance: String, point: String?, pointCaptureTime: String?, launchStatus: String,
        rtoSeconds: Double?, error: String?
    ) {
        self.machine = machine
        self.instance = instance
        self.point = point
        self.pointCaptureTime = pointCaptureTime
        self.launchStatus = launchStatus
        self.rtoSeconds = rtoSeconds
        self.error = error
    }
}

/// One line of a job's log (`GET /jobs/{id}/events?after=ID`).
public struct JobEventDTO: Codable, Sendable, Equatable {
    public var id: Int64
    public var time: String
    /// JOB_START, SNAPSHOT_START, CONVERSION_START, LAUNCH_START, CHECK_PASSED, LAUNCH_FAILED, JOB_END …
    public var kind: String
    public var machine: String?
    public var instance: String?
    public var detail: String
    public var error: String?

    public init(id: Int64, time: String, kind: String, machine: String?, instance: String?, detail: String, error: String?) {
        self.id = id
        self.time = time
        self.kind = kind
        self.machine = machine
        self.instance = instance
        self.detail = detail
        self.error = error
    }
}

/// A recovery instance.
public struct InstanceDTO: Codable, Sendable, Equatable {
    public var id: String
    public var machine: String
    public var job: String
    public var mode: String
    public var point: String
    public var pointCaptureTime: String
    public var state: String
    public var stateReason: String?
    public var launcher: String
    /// Where the instance can be reached, when the launcher says.
    public var address: String?
    public var createdAt: String
    public var launchedAt: String?
    public var terminatedAt: String?

    public init(
        id: String, machine: String, job: String, mode: String, point: String, pointCaptureTime: String, state: String,
        stateReason: String?, launcher: String, address: String?, createdAt: String, launchedAt: String?,
        terminatedAt: String?
    ) {
        self.id = id
        self.machine = machine
        self.job = job
        self.mode = mode
        self.point = point
        self.pointCaptureTime = pointCaptureTime
        self.state = state
        self.stateReason = stateReason
        self.launcher = launcher
        self.address = address
        self.createdAt = createdAt
        self.launchedAt = launchedAt
        self.terminatedAt = terminatedAt
    }
}
