public import LifeboatCore

/// A protected machine and its replication state (`GET /machines`, `GET /machines/{name}`).
public struct MachineDTO: Codable, Sendable, Equatable {
    public var name: String
    /// A replication state (INITIATING, INITIAL_SYNC, CONTINUOUS, BACKLOG, RESCAN, STALLED, DISCONNECTED, PAUSED,
    /// STOPPED) or REMOVED.
    public var state: String
    public var stateReason: String?
    public var connected: Bool
    public var paused: Bool
    public var lagSeconds: Double?
    public var initialSyncPercent: Double?
    public var backlogBytes: UInt64
    public var etaSeconds: Double?
    public var lastPoint: String?
    public var lastConsistentCaptureTime: String?
    public var lastSeen: String?
    public var agentVersion: String?
    public var throttleMbps: UInt32
    public var maxFreezeMilliseconds: UInt32
    public var application: String?
    /// NOT_TESTED, TESTED_RECENTLY, TEST_OVERDUE, TEST_FAILED, RECOVERY_LAUNCHED.
    public var drLifecycle: String
    public var lastDrillAt: String?
    public var lastDrillPassedAt: String?
    /// Recovery instances of this machine that hold resources now, with their modes (TEST shows purple).
    public var runningInstances: [RunningInstanceDTO]
    public var launchSettings: LaunchSettings
    public var volumes: [VolumeDTO]

    public init(
        name: String, state: String, stateReason: String?, connected: Bool, paused: Bool, lagSeconds: Double?,
        initialSyncPercent: Double?, backlogBytes: UInt64, etaSeconds: Double?, lastPoint: String?,
        lastConsistentCaptureTime: String?, lastSeen: String?, agentVersion: String?, throttleMbps: UInt32,
        maxFreezeMilliseconds: UInt32, application: String?, drLifecycle: String, lastDrillAt: String?,
        lastDrillPassedAt: String?, runningInstances: [RunningInstanceDTO], launchSettings: LaunchSettings,
        volumes: [VolumeDTO]
    ) {
        self.name = name
        self.state = state
        self.stateReason = stateReason
        self.connected = connected
        self.paused = paused
        self.lagSeconds = lagSeconds
        self.initialSyncPercent = initialSyncPercent
        self.backlogBytes = backlogBytes
        self.etaSeconds = etaSeconds
        self.lastPoint = lastPoint
        self.lastConsistentCaptureTime = lastConsistentCaptureTime
        self.lastSeen = lastSeen
        self.agentVersion = agentVersion
        self.throttleMbps = throttleMbps
        self.maxFreezeMilliseconds = maxFreezeMilliseconds
        self.application = application
        self.drLifecycle = drLifecycle
        self.lastDrillAt = lastDrillAt
        self.lastDrillPassedAt = lastDrillPassedAt
        self.runningInstances = runningInstances
        self.launchSettings = launchSettings
        self.volumes = volumes
    }
}

public struct RunningInstanceDTO: Codable, Sendable, Equatable {
    public var id: String
    public var mode: String
    public var state: String

    public init(id: String, mode: String, state: String) {
        self.id = id
        self.mode = mode
        self.state = state
    }
}

public struct VolumeDTO: Codable, Sendable, Equatable {
    public var name: String
    public var size: Int64

    public init(name: String, size: Int64) {
        self.name = name
        self.size = size
    }
}

/// `PATCH /machines/{name}`: only the fields given change. `application: ""` removes it from its application.
public struct MachineUpdate: Codable, Sendable, Equatable {
    public var throttleMbps: UInt32?
    public var maxFreezeMilliseconds: UInt32?
    public var application: String?
    public var launchSettings: LaunchSettings?
    public var dryRun: Bool?

    public init(
        throttleMbps: UInt32? = nil, maxFreezeMilliseconds: UInt32? = nil, application: String? = nil,
        launchSettings: LaunchSettings? = nil, dryRun: Bool? = nil
    ) {
        self.throttleMbps = throttleMbps
        self.maxFreezeMilliseconds = maxFreezeMilliseconds
        self.application = application
        self.launchSettings = launchSettings
        self.dryRun = dryRun
    }
}

/// A recovery point (`GET /machines/{name}/points`), newest first.
public struct PointDTO: Codable, Sendable, Equatable {
    /// The id to launch from (`--point`).
    public var id: String
    public var sequence: UInt64
    public var captureTime: String
    public var committedAt: String
    public var consistent: Bool
    public var changedBytes: UInt64

    public init(id: String, sequence: UInt64, captureTime: String, committedAt: String, consistent: Bool, changedBytes: UInt64) {
        self.id = id
        self.sequence = sequence
        self.captureTime = captureTime
        self.committedAt = committedAt
        self.consistent = consistent
        self.changedBytes = changedBytes
    }
}
