import GRDB
public import LifeboatCore

/// One volume of a machine as its agent last announced it.
public struct VolumeRecord: Sendable, Equatable {
    public var name: String
    /// Size in bytes.
    public var size: Int64

    public init(name: String, size: Int64) {
        self.name = name
        self.size = size
    }
}

/// Everything the catalog knows about one machine: enrollment, connection, replication status, last point
/// and settings.
public struct MachineRecord: Sendable, Equatable {
    public var name: String
    /// The serial number (hex) of the machine's current client certificate.
    public var certificateSerial: String
    public var certificateExpires: Timestamp
    public var enrolledAt: Timestamp
    /// When the machine was removed; nil while it is active.
    public var removedAt: Timestamp?

    /// Whether an agent session is connected now.
    public var connected: Bool
    /// The agent's address at its last connection.
    public var address: String?
    public var agentVersion: String?
    /// The last time the server heard from the agent (connect, status, commit, disconnect).
    public var lastSeen: Timestamp?

    /// The replication state, with DRS's names (`INITIATING`, `INITIAL_SYNC`, `CONTINUOUS`, `DISCONNECTED`, …).
    public var state: String
    /// Why the machine is in that state (a stall's cause), when known.
    public var stateReason: String?
    /// Bytes changed on the source and not yet replicated.
    public var backlogBytes: UInt64
    /// Bytes of the initial sync done.
    public var syncedBytes: UInt64
    /// Bytes the initial sync covers (all volumes).
    public var totalBytes: UInt64
    /// Recent replication throughput, nil when unknown (not connected, nothing measured yet).
    public var throughputBytesPerSecond: Double?

    /// The last commit recorded: point id, agent sequence and the instant it captures.
    public var lastPoint: UInt64?
    public var lastSequence: UInt64?
    public var lastPointCaptureTime: Timestamp?
    /// The capture time of the last crash-consistent commit: what lag is measured from.
    public var lastConsistentCaptureTime: Timestamp?

    /// Bandwidth limit in Mbit/s pushed to the agent; 0 = none.
    public var throttleMbps: UInt32
    /// The longest the agent may keep filesystems frozen for a consistent point, in milliseconds.
    public var maxFreezeMilliseconds: UInt32
    /// Replication paused by an operator: the agent stays connected and sends nothing until resumed.
    public var paused: Bool
    /// The volumes as last announced, sorted by name.
    public var volumes: [VolumeRecord]

    /// The application the machine belongs to (launched together with `--application`), if any.
    public var application: String?
    /// How the machine is launched: its own settings (`lifeboat machines configure`), else its application's, else
    /// the server's default launch settings, else the built-in defaults.
    public var launchSettings: LaunchSettings
    /// The DR lifecycle as last recorded; `DRLifecycle.effective` turns an old TESTED_RECENTLY into TEST_OVERDUE.
    public var drLifecycle: DRLifecycle
    /// When the last drill ended (passed or failed).
    public var lastDrillAt: Timestamp?
    /// When the last drill passed.
    public var lastDrillPassedAt: Timestamp?

    /// A record with the given identity and everything else at its initial value unless given.
    public init(
        name: String,
        certificateSerial: String,
        certificateExpires: Timestamp,
        enrolledAt: Timestamp,
        removedAt: Timestamp? = nil,
        connected: Bool = false,
        address: String? = nil,
        agentVersion: String? = nil,
        lastSeen: Timestamp? = nil,
        state: String = "INITIATING",
        stateReason: String? = nil,
        backlogBytes: UInt64 = 0,
        syncedBytes: UInt64 = 0,
        totalBytes: UInt64 = 0,
        throughputBytesPerSecond: Double? = nil,
        lastPoint: UInt64? = nil,
        lastSequence: UInt64? = nil,
        lastPointCaptureTime: Timestamp? = nil,
        lastConsistentCaptureTime: Timestamp? = nil,
        throttleMbps: UInt32 = 0,
        maxFreezeMilliseconds: UInt32 = 250,
        paused: Bool = false,
        volumes: [VolumeRecord] = [],
        application: String? = nil,
        launchSettings: LaunchSettings = LaunchSettings(),
        drLifecycle: DRLifecycle = .notTested,
        lastDrillAt: Timestamp? = nil,
        lastDrillPassedAt: Timestamp? = nil
    ) {
        self.name = name
        self.certificateSerial = certificateSerial
        self.certificateExpires = certificateExpires
        self.enrolledAt = enrolledAt
        self.removedAt = removedAt
        self.connected = connected
        self.address = address
        self.agentVersion = agentVersion
        self.lastSeen = lastSeen
        self.state = state
        self.stateReason = stateReason
        self.backlogBytes = backlogBytes
        self.syncedBytes = syncedBytes
        self.totalBytes = totalBytes
        self.throughputBytesPerSecond = throughputBytesPerSecond
        self.lastPoint = lastPoint
        self.lastSequence = lastSequence
        self.lastPointCaptureTime = lastPointCaptureTime
        self.lastConsistentCaptureTime = lastConsistentCaptureTime
        self.throttleMbps = throttleMbps
        self.maxFreezeMilliseconds = maxFreezeMilliseconds
        self.paused = paused
        self.volumes = volumes
        self.application = application
        self.launchSettings = launchSettings
        self.drLifecycle = drLifecycle
        self.lastDrillAt = lastDrillAt
        self.lastDrillPassedAt = lastDrillPassedAt
    }

    /// The DR lifecycle to show at `now` (TEST_OVERDUE once the last passed drill is too old).
    public func effectiveLifecycle(now: Timestamp, overdueDays: Int = 30) -> DRLifecycle {
        DRLifecycle.effective(stored: drLifecycle, lastTestPassed: lastDrillPassedAt, now: now, overdueAfter: Int64(overdueDays) * 86_400)
    }

    /// Whether the machine is enrolled and not removed.
    public var isActive: Bool { removedAt == nil }

    /// now − lastConsistentCaptureTime in seconds (never negative); nil without a consistent point.
    public func lagSeconds(now: Timestamp) -> Double? {
        guard let capture = lastConsistentCaptureTime else { return nil }
        return max(0, Double(now.nanoseconds - capture.nanoseconds) / 1e9)
    }

    /// Percent of the initial sync done (syncedBytes / totalBytes × 100, at most 100); nil when totalBytes is 0.
    public var initialSyncPercent: Double? {
        guard totalBytes > 0 else { return nil }
        return min(100, Double(syncedBytes) / Double(totalBytes) * 100)
    }

    /// Seconds until the backlog is replicated at the current throughput; nil when throughput is unknown or 0.
    public var etaSeconds: Double? {
        guard let throughput = throughputBytesPerSecond, throughput > 0, throughput.isFinite else { return nil }
        return Double(backlogBytes) / throughput
    }
}

extension MachineRecord {
    /// The columns `init(row:volumes:)` reads, for `SELECT \(MachineRecord.columns) FROM machines`. The launch
    /// settings are the ones that apply: the machine's own, else its application's, else the server's default
    /// launch settings (`lifeboat settings`), else the built-in defaults.
    static let columns = """
        name, certificate_serial, certificate_expires, enrolled_at, removed_at, connected, address, agent_version,
        last_seen, state, state_reason, backlog_bytes, synced_bytes, total_bytes, throughput, last_point,
        last_sequence, last_point_capture_time, last_consistent_capture_time, throttle_mbps, max_freeze_ms, paused,
        application,
        coalesce(
            launch_settings,
            (SELECT a.launch_settings FROM applications a WHERE a.name = machines.application),
            (SELECT json_extract(s.value, '$.defaultLaunchSettings') FROM settings s WHERE s.key = 'control')
        ) AS launch_settings,
        dr_lifecycle, last_drill_at, last_drill_passed_at
        """

    init(row: Row, volumes: [VolumeRecord]) {
        func time(_ column: String) -> Timestamp? { (row[column] as Int64?).map(Timestamp.init(nanoseconds:)) }
        func unsigned(_ column: String) -> UInt64? { (row[column] as Int64?).map { UInt64(bitPattern: $0) } }
        self.init(
            name: row["name"],
            certificateSerial: row["certificate_serial"],
            certificateExpires: Timestamp(nanoseconds: row["certificate_expires"]),
            enrolledAt: Timestamp(nanoseconds: row["enrolled_at"]),
            removedAt: time("removed_at"),
            connected: row["connected"],
            address: row["address"],
            agentVersion: row["agent_version"],
            lastSeen: time("last_seen"),
            state: row["state"],
            stateReason: row["state_reason"],
            backlogBytes: unsigned("backlog_bytes") ?? 0,
            syncedBytes: unsigned("synced_bytes") ?? 0,
            totalBytes: unsigned("total_bytes") ?? 0,
            throughputBytesPerSecond: row["throughput"],
            lastPoint: unsigned("last_point"),
            lastSequence: unsigned("last_sequence"),
            lastPointCaptureTime: time("last_point_capture_time"),
            lastConsistentCaptureTime: time("last_consistent_capture_time"),
            throttleMbps: UInt32(truncatingIfNeeded: row["throttle_mbps"] as Int64),
            maxFreezeMilliseconds: UInt32(truncatingIfNeeded: row["max_freeze_ms"] as Int64),
            paused: row["paused"],
            volumes: volumes,
            application: row["application"],
            launchSettings: (row["launch_settings"] as String?).flatMap { try? LaunchSettingsCoding.decode($0) }
                ?? LaunchSettings(),
            drLifecycle: DRLifecycle(rawValue: row["dr_lifecycle"]) ?? .notTested,
            lastDrillAt: time("last_drill_at"),
            lastDrillPassedAt: time("last_drill_passed_at")
        )
    }
}
