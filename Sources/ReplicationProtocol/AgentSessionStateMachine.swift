public import LifeboatCore

/// The agent's side of its connection to the replication server, as a pure state machine. The agent
/// calls the command methods (`connected`, `beginCommit`, `extent`, `endCommit`) and `received` for every
/// frame; it sends what comes back in `.send` and reacts to the other actions. No I/O.
public struct AgentSessionStateMachine: Sendable {
    public enum Action: Sendable, Equatable {
        case send(Message)
        /// The server accepted us. If `lastCommittedSequence` is at or above a commit the agent sent but
        /// never saw acknowledged, that commit landed: the agent may forget its changes.
        case established(settings: AgentSettings, lastCommittedSequence: UInt64)
        /// Durable on the server: forget the changes of this commit.
        case committed(sequence: UInt64, point: UInt64, time: Timestamp)
        /// Not stored: keep the changes and try again later.
        case commitRejected(sequence: UInt64, reason: CloseReason)
        case settingsChanged(AgentSettings)
        /// The connection is over; `reason` nil for a clean close. `unacknowledged` names a commit whose
        /// fate is unknown (sent, no answer): ask on reconnect.
        case closed(reason: CloseReason?, unacknowledged: UInt64?)
    }

    enum State: Sendable, Equatable {
        case disconnected
        case awaitingWelcome
        case ready(lastSequence: UInt64)
        case sending(lastSequence: UInt64, sequence: UInt64, volumes: [VolumeInfo], extents: UInt64, bytes: UInt64)
        case awaitingAck(lastSequence: UInt64, sequence: UInt64)
        case closed
    }

    private(set) var state: State = .disconnected

    public init() {}

    public var isReady: Bool {
        if case .ready = state { return true }
        return false
    }

    /// The transport is up: introduce ourselves.
    public mutating func connected(agentVersion: String, machine: String, volumes: [VolumeInfo]) throws -> [Action] {
        guard state == .disconnected else { throw misuse("connected twice") }
        state = .awaitingWelcome
        return [
            .send(
                .hello(
                    protocolVersion: ReplicationProtocolVersion.current,
                    agentVersion: agentVersion,
                    machine: machine,
                    volumes: volumes
                )
            )
        ]
    }

    /// Starts commit `sequence` (greater than every sequence before).
    public mutating func beginCommit(sequence: UInt64, volumes: [VolumeInfo]) throws -> [Action] {
        guard case .ready(let last) = state else { throw misuse("beginCommit while \(state)") }
        guard sequence > last else { throw misuse("sequence \(sequence) does not follow \(last)") }
        state = .sending(lastSequence: last, sequence: sequence, volumes: volumes, extents: 0, bytes: 0)
        return [.send(.beginCommit(sequence: sequence, volumes: volumes))]
    }

    /// Sends changed bytes of a volume of the current commit. `data` is raw (encoding 0), zstd (1), or one zstd
    /// frame per 64 KiB segment piece (2).
    public mutating func extent(volume: UInt16, offset: UInt64, encoding: UInt8, rawLength: UInt32, data: [UInt8]) throws
        -> [Action]
    {
        guard case .sending(let last, let sequence, let volumes, let extents, let bytes) = state else {
            throw misuse("extent outside a commit")
        }
        guard Int(volume) < volumes.count, rawLength > 0, rawLength <= UInt32(FrameCodec.maxExtentBytes) else {
            throw misuse("extent for volume \(volume) of \(rawLength) bytes")
        }
        state = .sending(
            lastSequence: last,
            sequence: sequence,
            volumes: volumes,
            extents: extents + 1,
            bytes: bytes + UInt64(rawLength)
        )
        return [.send(.extent(volume: volume, offset: offset, encoding: encoding, rawLength: rawLength, data: data))]
    }

    /// Closes the current commit; the answer arrives as `committed` or `commitRejected`.
    /// `epochs`: per volume of the commit, in BEGIN_COMMIT's order, the tracker epoch of the state it creates.
    public mutating func endCommit(consistent: Bool, captureTime: Timestamp, epochs: [UInt64]) throws -> [Action] {
        guard case .sending(let last, let sequence, _, let extents, let bytes) = state else {
            throw misuse("endCommit outside a commit")
        }
        guard case .sending(_, _, let volumes, _, _) = state, volumes.count == epochs.count else {
            throw misuse("endCommit with \(epochs.count) epochs")
        }
        state = .awaitingAck(lastSequence: last, sequence: sequence)
        return [
            .send(
                .endCommit(
                    sequence: sequence,
                    extents: extents,
                    bytes: bytes,
                    consistent: consistent,
                    captureTime: captureTime,
                    epochs: epochs
                )
            )
        ]
    }

    /// A frame arrived from the server.
    public mutating func received(_ message: Message) -> [Action] {
        switch (state, message) {
        case (.closed, _), (.disconnected, _):
            return []
        case (.awaitingWelcome, .welcome(let version, let settings, let last)):
            guard version == ReplicationProtocolVersion.current else {
                return close(LifeboatError("protocol.version", "server speaks protocol \(version), this agent \(ReplicationProtocolVersion.current)"))
            }
            state = .ready(lastSequence: last)
            return [.established(settings: settings, lastCommittedSequence: last)]
        case (.awaitingAck(let last, let sequence), .commitAck(let acked, let point, let time)):
            guard acked == sequence else {
                return close(.protocolViolation("ack for commit \(acked) while waiting for \(sequence)"))
            }
            state = .ready(lastSequence: max(last, sequence))
            return [.committed(sequence: sequence, point: point, time: time)]
        case (.awaitingAck(let last, let sequence), .commitFailed(let failed, let code, let text)):
            guard failed == sequence else {
                return close(.protocolViolation("failure for commit \(failed) while waiting for \(sequence)"))
            }
            state = .ready(lastSequence: last)
            return [.commitRejected(sequence: sequence, reason: CloseReason(code: code, message: text))]
        case (_, .settings(let settings)) where state != .awaitingWelcome:
            return [.settingsChanged(settings)]
        case (_, .ping(let nonce)):
            return [.send(.pong(nonce: nonce))]
        case (_, .pong):
            return []
        case (_, .error(let code, let text)):
            let pending = unacknowledged
            state = .closed
            return [.closed(reason: CloseReason(code: code, message: text), unacknowledged: pending)]
        case (_, .goodbye):
            let pending = unacknowledged
            state = .closed
            return [.closed(reason: nil, unacknowledged: pending)]
        default:
            return close(.protocolViolation("unexpected \(message.type) from the server"))
        }
    }

    /// The transport closed or failed.
    public mutating func connectionClosed() -> [Action] {
        guard state != .closed else { return [] }
        let pending = unacknowledged
        state = .closed
        return [.closed(reason: CloseReason(code: "connection.lost", message: "the connection to the server was lost"), unacknowledged: pending)]
    }

    private var unacknowledged: UInt64? {
        switch state {
        case .awaitingAck(_, let sequence): sequence
        default: nil
        }
    }

    private mutating func close(_ error: LifeboatError) -> [Action] {
        let pending = unacknowledged
        state = .closed
        return [
            .send(.error(code: error.code.rawValue, message: error.message)),
            .closed(reason: CloseReason(error), unacknowledged: pending),
        ]
    }

    private func misuse(_ what: String) -> LifeboatError {
        LifeboatError("protocol.misuse", "agent session: \(what)")
    }
}
