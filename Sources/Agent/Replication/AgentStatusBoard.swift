import LifeboatCore
import ReplicationProtocol

/// What one cycle ended with.
public struct CycleOutcome: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Acknowledged by the server as `point`.
        case committed(point: UInt64, consistent: Bool)
        /// Part of an initial sync acknowledged as `point` (not a recovery point); the next cycle sends more.
        case initialSyncPart(point: UInt64, committedBytes: Int64, remainingBytes: Int64)
        /// Nothing changed and no heartbeat was due: nothing was sent.
        case unchanged
        /// The server did not store the commit; the changes stay pending.
        case rejected(code: String, message: String)
    }

    public var kind: Kind
    public var sequence: UInt64
    public var changedBytes: Int64
    /// Why the point is not crash-consistent, when it is not.
    public var inconsistencyReason: String?
    /// How long the filesystems were frozen.
    public var frozenFor: Duration?
    /// From the start of the cycle to the server's answer.
    public var duration: Duration = .zero
}

/// The agent's own view of its replication state, reported to the server in STATUS frames.
final class AgentStatusBoard: @unchecked Sendable {
    private let lock = PlainLock()
    private(set) var state: ReplicationState = .initiating
    private(set) var reason: String?
    private var outcome: CycleOutcome?

    func set(_ state: ReplicationState, reason: String? = nil) {
        lock.withLock {
            self.state = state
            self.reason = reason
        }
    }

    var current: (state: ReplicationState, reason: String?) { lock.withLock { (state, reason) } }

    var lastOutcome: CycleOutcome? {
        get { lock.withLock { outcome } }
        set { lock.withLock { outcome = newValue } }
    }
}
