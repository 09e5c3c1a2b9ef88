public import LifeboatCore

/// An application: machines launched together, with RPO/RTO objectives measured against reality.
public struct ApplicationDTO: Codable, Sendable, Equatable {
    public var name: String
    public var description: String
    public var rpoObjectiveSeconds: Int64?
    public var rtoObjectiveSeconds: Int64?
    public var launchSettings: LaunchSettings?
    public var machines: [String]
    public var createdAt: String
    /// Measured: the worst current lag of its machines (nil until every machine has a point).
    public var measuredRPOSeconds: Double?
    /// Measured: the worst RTO of its machines' last passed drills (nil until each has one).
    public var measuredRTOSeconds: Double?
    public var lastDrillAt: String?
    /// nil when the objective or the measurement is missing.
    public var rpoMet: Bool?
    public var rtoMet: Bool?
    public var machineObjectives: [MachineObjectiveDTO]

    public init(
        name: String, description: String, rpoObjectiveSeconds: Int64?, rtoObjectiveSeconds: Int64?,
        launchSettings: LaunchSettings?, machines: [String], createdAt: String, measuredRPOSeconds: Double?,
        measuredRTOSeconds: Double?, lastDrillAt: String?, rpoMet: Bool?, rtoMet: Bool?,
        machineObjectives: [MachineObjectiveDTO]
    ) {
        self.name = name
        self.description = description
        self.rpoObjectiveSeconds = rpoObjectiveSeconds
        self.rtoObjectiveSeconds = rtoObjectiveSeconds
        self.launchSettings = launchSettings
        self.machines = machines
        self.createdAt = createdAt
        self.measuredRPOSeconds = measuredRPOSeconds
        self.measuredRTOSeconds = measuredRTOSeconds
        self.lastDrillAt = lastDrillAt
        self.rpoMet = rpoMet
        self.rtoMet = rtoMet
        self.machineObjectives = machineObjectives
    }
}

public struct MachineObjectiveDTO: Codable, Sendable, Equatable {
    public var machine: String
    public var lagSeconds: Double?
    public var lastDrillRTOSeconds: Double?
    public var lastDrillAt: String?
    public var lastDrillPassed: Bool?

    public init(machine: String, lagSeconds: Double?, lastDrillRTOSeconds: Double?, lastDrillAt: String?, lastDrillPassed: Bool?) {
        self.machine = machine
        self.lagSeconds = lagSeconds
        self.lastDrillRTOSeconds = lastDrillRTOSeconds
        self.lastDrillAt = lastDrillAt
        self.lastDrillPassed = lastDrillPassed
    }
}

/// `POST /applications`.
public struct NewApplicationRequest: Codable, Sendable, Equatable {
    public var name: String
    public var description: String?
    public var rpoObjectiveSeconds: Int64?
    public var rtoObjectiveSeconds: Int64?
    public var dryRun: Bool?

    public init(name: String, description: String? = nil, rpoObjectiveSeconds: Int64? = nil, rtoObjectiveSeconds: Int64? = nil, dryRun: Bool? = nil) {
        self.name = name
        self.description = description
        self.rpoObjectiveSeconds = rpoObjectiveSeconds
        self.rtoObjectiveSeconds = rtoObjectiveSeconds
        self.dryRun = dryRun
    }
}

/// `PATCH /applications/{name}`: only the fields given change; `clear` names fields to remove
/// (`rpoObjectiveSeconds`, `rtoObjectiveSeconds`, `launchSettings`).
public struct ApplicationUpdateDTO: Codable, Sendable, Equatable {
    public var description: String?
    public var rpoObjectiveSeconds: Int64?
    public var rtoObjectiveSeconds: Int64?
    public var launchSettings: LaunchSettings?
    public var clear: [String]?
    public var dryRun: Bool?

    public init(
        description: String? = nil, rpoObjectiveSeconds: Int64? = nil, rtoObjectiveSeconds: Int64? = nil,
        launchSettings: LaunchSettings? = nil, clear: [String]? = nil, dryRun: Bool? = nil
    ) {
        self.description = description
        self.rpoObjectiveSeconds = rpoObjectiveSeconds
        self.rtoObjectiveSeconds = rtoObjectiveSeconds
        self.launchSettings = launchSettings
        self.clear = clear
        self.dryRun = dryRun
    }
}

/// A declared incident: recovery-mode launches happen under an open one.
public struct IncidentDTO: Codable, Sendable, Equatable {
    public var id: String
    public var title: String
    /// LOW, MEDIUM, HIGH, CRITICAL.
    public var severity: String
    public var applications: [String]
    /// OPEN or CLOSED.
    public var status: String
    public var declaredBy: String
    public var declaredAt: String
    public var closedBy: String?
    public var closedAt: String?
    public var summary: String?
    /// Every launch job made under it.
    public var launches: [String]
    public var notes: [IncidentNoteDTO]

    public init(
        id: String, title: String, severity: String, applications: [String], status: String, declaredBy: String,
        declaredAt: String, closedBy: String?, closedAt: String?, summary: String?, launches: [String],
        notes: [IncidentNoteDTO]
    ) {
        self.id = id
        self.title = title
        self.severity = severity
        self.applications = applications
        self.status = status
        self.declaredBy = declaredBy
        self.declaredAt = declaredAt
        self.closedBy = closedBy
        self.closedAt = closedAt
        self.summary = summary
        self.launches = launches
        self.notes = notes
    }
}

public struct IncidentNoteDTO: Codable, Sendable, Equatable {
    public var id: Int64
    public var time: String
    public var author: String
    /// NOTE or REPORT.
    public var kind: String
    public var text: String

    public init(id: Int64, time: String, author: String, kind: String, text: String) {
        self.id = id
        self.time = time
        self.author = author
        self.kind = kind
        self.text = text
    }
}

/// `POST /incidents`.
public struct NewIncidentRequest: Codable, Sendable, Equatable {
    public var title: String
    public var severity: String
    public var applications: [String]?
    public var dryRun: Bool?

    public init(title: String, severity: String, applications: [String]? = nil, dryRun: Bool? = nil) {
        self.title = title
        self.severity = severity
        self.applications = applications
        self.dryRun = dryRun
    }
}

/// `POST /incidents/{id}/close`.
public struct CloseIncidentRequest: Codable, Sendable, Equatable {
    public var summary: String
    public var dryRun: Bool?

    public init(summary: String, dryRun: Bool? = nil) {
        self.summary = summary
        self.dryRun = dryRun
    }
}

/// `POST /incidents/{id}/notes`.
public struct NewNoteRequest: Codable, Sendable, Equatable {
    /// NOTE (default) or REPORT.
    public var kind: String?
    public var text: String
    public var dryRun: Bool?

    public init(kind: String? = nil, text: String, dryRun: Bool? = nil) {
        self.kind = kind
        self.text = text
        self.dryRun = dryRun
    }
}

/// `GET /settings`, `PATCH /settings` (only the fields given change).
public struct SettingsDTO: Codable, Sendable, Equatable {
    /// Recovery-mode launches need an open incident (default true).
    public var requireIncidentForRecovery: Bool?
    /// The point-in-time policy: which commits are kept as recovery points.
    public var pitPolicy: RetentionPolicy?
    /// Launch settings of machines that have none of their own and no application's.
    public var defaultLaunchSettings: LaunchSettings?
    /// Days after a passed drill before the lifecycle says TEST_OVERDUE.
    public var drillOverdueDays: Int?
    public var sessionHours: Int?
    public var loginFailuresBeforeLockout: Int?
    public var lockoutSeconds: Int?
    public var dryRun: Bool?

    public init(
        requireIncidentForRecovery: Bool? = nil, pitPolicy: RetentionPolicy? = nil, defaultLaunchSettings: LaunchSettings? = nil,
        drillOverdueDays: Int? = nil, sessionHours: Int? = nil, loginFailuresBeforeLockout: Int? = nil,
        lockoutSeconds: Int? = nil, dryRun: Bool? = nil
    ) {
        self.requireIncidentForRecovery = requireIncidentForRecovery
        self.pitPolicy = pitPolicy
        self.defaultLaunchSettings = defaultLaunchSettings
        self.drillOverdueDays = drillOverdueDays
        self.sessionHours = sessionHours
        self.loginFailuresBeforeLockout = loginFailuresBeforeLockout
        self.lockoutSeconds = lockoutSeconds
        self.dryRun = dryRun
    }
}

/// One entry of the hash-chained audit log.
public struct AuditEntryDTO: Codable, Sendable, Equatable {
    public var seq: Int64
    public var time: String
    public var actor: String
    public var action: String
    public var target: String
    public var source: String
    public var result: String
    public var detail: String
    public var hash: String

    public init(seq: Int64, time: String, actor: String, action: String, target: String, source: String, result: String, detail: String, hash: String) {
        self.seq = seq
        self.time = time
        self.actor = actor
        self.action = action
        self.target = target
        self.source = source
        self.result = result
        self.detail = detail
        self.hash = hash
    }
}

/// `GET /audit/verify`.
public struct AuditVerificationDTO: Codable, Sendable, Equatable {
    public var intact: Bool
    public var entries: Int
    public var headSeq: Int64
    public var headHash: String
    public var problems: [AuditProblemDTO]

    public init(intact: Bool, entries: Int, headSeq: Int64, headHash: String, problems: [AuditProblemDTO]) {
        self.intact = intact
        self.entries = entries
        self.headSeq = headSeq
        self.headHash = headHash
        self.problems = problems
    }
}

public struct AuditProblemDTO: Codable, Sendable, Equatable {
    public var seq: Int64
    public var kind: String
    public var message: String

    public init(seq: Int64, kind: String, message: String) {
        self.seq = seq
        self.kind = kind
        self.message = message
    }
}
