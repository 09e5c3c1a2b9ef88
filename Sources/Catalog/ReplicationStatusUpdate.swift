/// Where replication of one machine stands, as the replication server reports it (from the agent's STATUS).
public struct ReplicationStatusUpdate: Sendable, Equatable {
    /// The replication state with DRS's names: `INITIAL_SYNC`, `CONTINUOUS`, `BACKLOG`, `RESCAN`, `STALLED`, …
    public var state: String
    /// Why the machine is in that state (a stall's cause), when known.
    public var stateReason: String?
    /// Bytes changed on the source and not yet replicated.
    public var backlogBytes: UInt64
    /// Bytes of the initial sync done.
    public var syncedBytes: UInt64
    /// Bytes the initial sync covers.
    public var totalBytes: UInt64
    /// Recent throughput in bytes per second, nil when not measured.
    public var throughputBytesPerSecond: Double?

    public init(
        state: String,
        stateReason: String? = nil,
        backlogBytes: UInt64 = 0,
        syncedBytes: UInt64 = 0,
        totalBytes: UInt64 = 0,
        throughputBytesPerSecond: Double? = nil
    ) {
        self.state = state
        self.stateReason = stateReason
        self.backlogBytes = backlogBytes
        self.syncedBytes = syncedBytes
        self.totalBytes = totalBytes
        self.throughputBytesPerSecond = throughputBytesPerSecond
    }
}
