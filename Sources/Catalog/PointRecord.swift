public import LifeboatCore

/// One commit of a machine as the catalog indexes it for the control plane (the staging store holds the data).
public struct PointRecord: Sendable, Equatable {
    public var machine: String
    /// The point id the staging store gave the commit.
    public var point: UInt64
    /// The agent's commit sequence number.
    public var sequence: UInt64
    /// The instant the point captures on the source.
    public var captureTime: Timestamp
    /// When the server made the commit durable.
    public var committedAt: Timestamp
    /// Whether the capture was crash-consistent (filesystems frozen).
    public var consistent: Bool
    /// Raw bytes the commit changed.
    public var changedBytes: UInt64

    public init(
        machine: String,
        point: UInt64,
        sequence: UInt64,
        captureTime: Timestamp,
        committedAt: Timestamp,
        consistent: Bool,
        changedBytes: UInt64
    ) {
        self.machine = machine
        self.point = point
        self.sequence = sequence
        self.captureTime = captureTime
        self.committedAt = committedAt
        self.consistent = consistent
        self.changedBytes = changedBytes
    }
}
