public import LifeboatCore

/// The replication server's side of one agent connection, as a pure state machine: feed it what happened
/// (a frame arrived, the catalog accepted the machine, the store committed), do what it returns. No I/O.
///
/// One commit is in flight at a time: BEGIN_COMMIT, EXTENT…, END_COMMIT, then the server answers
/// COMMIT_ACK (durable) or COMMIT_FAILED (nothing visible) before the agent may begin the next.
public struct ServerSessionStateMachine: Sendable {
    public enum Action: Sendable, Equatable {
        case send(Message)
        /// Check the machine (enrolled, not removed) and answer `machineAccepted` or `machineRejected`.
        case authorize(machine: String, volumes: [VolumeInfo])
        /// Redeem the token and sign the CSR; answer `enrollSucceeded` or `enrollFailed`.
        case enroll(token: String, machine: String, csr: [UInt8])
        case beginCommit(machine: String, sequence: UInt64, volumes: [VolumeInfo])
        case writeExtent(volume: String, offset: UInt64, encoding: UInt8, rawLength: UInt32, data: [UInt8])
        /// Everything arrived: make the commit durable, then call `commitSucceeded` or `commitFailed`.
        case finishCommit(sequence: UInt64, consistent: Bool, captureTime: Timestamp, epochs: [UInt64])
        /// Drop the commit in progress; nothing of it becomes visible.
        case abandonCommit(sequence: UInt64)
        case recordStatus(state: ReplicationState, backlogBytes: UInt64, syncedBytes: UInt64, totalBytes: UInt64, reason: String)
        /// Close the connection; `reason` (nil for a clean close) is for the log.
        case close(reason: CloseReason?)
    }

    struct Commit: Sendable, Equatable {
        var sequence: UInt64
        var volumes: [VolumeInfo]
        var extents: UInt64 = 0
        var bytes: UInt64 = 0
    }

    enum State: Sendable, Equatable {
        case awaitingHello
        case enrolling(machine: String)
        case authorizing(machine: String)
        case ready(machine: String, lastSequence: UInt64)
        case receiving(machine: String, lastSequence: UInt64, commit: Commit)
        case committing(machine: String, lastSequence: UInt64, sequence: UInt64)
        case closed
    }

    private(set) var state: State = .awaitingHello
    /// The machine named by the client certificate the peer presented in the TLS handshake (its common
    /// name), nil when it presented none. Without one the peer may only enroll.
    public let certifiedMachine: String?

    public init(certifiedMachine: String?) {
        self.certifiedMachine = certifiedMachine
    }

    public var isClosed: Bool { state == .closed }

    /// The machine this connection speaks for, once it said hello.
    public var machine: String? {
        switch state {
        case .awaitingHello, .closed: nil
        case .enrolling(let m): m
        case .authorizing(let m), .ready(let m, _), .receiving(let m, _, _), .committing(let m, _, _): m
        }
    }

    private mutating func fail(_ error: LifeboatError, abandoning: UInt64? = nil) -> [Action] {
        state = .closed
        var actions: [Action] = []
        if let abandoning { actions.append(.abandonCommit(sequence: abandoning)) }
        actions.append(.send(.error(code: error.code.rawValue, message: error.message)))
        actions.append(.close(reason: CloseReason(error)))
        return actions
    }

    /// A frame arrived from the agent.
    public mutating func received(_ message: Message) -> [Action] {
        switch (state, message) {
        case (.closed, _):
            return []

        case (.awaitingHello, .hello(let version, _, let machine, let volumes)):
            guard version == ReplicationProtocolVersion.current else {
                return fail(
                    LifeboatError(
                        "protocol.version",
                        "agent speaks protocol \(version), this server speaks \(ReplicationProtocolVersion.current): upgrade the agent"
                    )
                )
            }
            guard let certified = certifiedMachine else {
                return fail(
                    LifeboatError(
                        "auth.certificate-required",
                        "this connection presented no client certificate: enroll the agent first with `lifeboat agent enroll`"
                    )
                )
            }
            guard certified == machine else {
                return fail(
                    LifeboatError(
                        "auth.machine-mismatch",
                        "the agent says it is '\(machine)' but its certificate was issued to '\(certified)'"
                    )
                )
            }
            do {
                try Names.validate(machine, kind: "machine")
                try Self.validate(volumes)
            } catch {
                return fail(error as? LifeboatError ?? .protocolViolation("\(error)"))
            }
            state = .authorizing(machine: machine)
            return [.authorize(machine: machine, volumes: volumes)]
        case (.awaitingHello, .enroll(let token, let machine, let csr)):
            do {
                try Names.validate(machine, kind: "machine")
            } catch {
                return fail(error as? LifeboatError ?? .protocolViolation("\(error)"))
            }
            state = .enrolling(machine: machine)
            return [.enroll(token: token, machine: machine, csr: csr)]
        case (.awaitingHello, _):
            return fail(.protocolViolation("the first frame must be HELLO, got \(message.type)"))

        case (.enrolling, _):
            return fail(.protocolViolation("\(message.type) during enrollment"))
        case (_, .ping(let nonce)):
            return [.send(.pong(nonce: nonce))]
        case (_, .pong):
            return []
        case (_, .status(let s, let backlog, let synced, let total, let reason)):
            if case .authorizing = state { return fail(.protocolViolation("STATUS before WELCOME")) }
            return [.recordStatus(state: s, backlogBytes: backlog, syncedBytes: synced, totalBytes: total, reason: reason)]
        case (.receiving(_, _, let commit), .goodbye):
            state = .closed
            return [.abandonCommit(sequence: commit.sequence), .close(reason: nil)]
        case (_, .goodbye):
            state = .closed
            return [.close(reason: nil)]
        case (.receiving(_, _, let commit), .error(let code, let text)):
            state = .closed
            return [.abandonCommit(sequence: commit.sequence), .close(reason: CloseReason(code: code, message: "agent reported: \(text)"))]
        case (_, .error(let code, let text)):
            state = .closed
            return [.close(reason: CloseReason(code: code, message: "agent reported: \(text)"))]

        case (.ready(let machine, let last), .beginCommit(let sequence, let volumes)):
            guard sequence > last else {
                return fail(.protocolViolation("commit sequence \(sequence) does not follow the last committed \(last)"))
            }
            do {
                try Self.validate(volumes)
            } catch {
                return fail(error as? LifeboatError ?? .protocolViolation("\(error)"))
            }
            state = .receiving(machine: machine, lastSequence: last, commit: Commit(sequence: sequence, volumes: volumes))
            return [.beginCommit(machine: machine, sequence: sequence, volumes: volumes)]

        case (.receiving(let machine, let last, var commit), .extent(let index, let offset, let encoding, let rawLength, let data)):
            guard Int(index) < commit.volumes.count else {
                return fail(.protocolViolation("extent names volume \(index) of \(commit.volumes.count)"), abandoning: commit.sequence)
            }
            let volume = commit.volumes[Int(index)]
            let end = offset + UInt64(rawLength)
            guard offset % 4096 == 0, end <= UInt64(volume.size), rawLength % 4096 == 0 || end == UInt64(volume.size) else {
                return fail(
                    .protocolViolation("extent \(offset)+\(rawLength) is misaligned or beyond volume '\(volume.name)' (\(volume.size) bytes)"),
                    abandoning: commit.sequence
                )
            }
            commit.extents += 1
            commit.bytes += UInt64(rawLength)
            state = .receiving(machine: machine, lastSequence: last, commit: commit)
            return [.writeExtent(volume: volume.name, offset: offset, encoding: encoding, rawLength: rawLength, data: data)]

        case (
            .receiving(let machine, let last, let commit),
            .endCommit(let sequence, let extents, let bytes, let consistent, let time, let epochs)
        ):
            guard sequence == commit.sequence, extents == commit.extents, bytes == commit.bytes else {
                return fail(
                    .protocolViolation(
                        "END_COMMIT \(sequence) says \(extents) extents / \(bytes) bytes; received \(commit.extents) / \(commit.bytes) for commit \(commit.sequence)"
                    ),
                    abandoning: commit.sequence
                )
            }
            guard epochs.count == commit.volumes.count else {
                return fail(
                    .protocolViolation("END_COMMIT names \(epochs.count) epochs for \(commit.volumes.count) volumes"),
                    abandoning: commit.sequence
                )
            }
            state = .committing(machine: machine, lastSequence: last, sequence: sequence)
            return [.finishCommit(sequence: sequence, consistent: consistent, captureTime: time, epochs: epochs)]

        case (.receiving(_, _, let commit), _):
            return fail(.protocolViolation("\(message.type) inside commit \(commit.sequence)"), abandoning: commit.sequence)
        default:
            return fail(.protocolViolation("unexpected \(message.type) frame"))
        }
    }

    /// The catalog accepted the machine.
    public mutating func machineAccepted(settings: AgentSettings, lastCommittedSequence: UInt64) -> [Action] {
        guard case .authorizing(let machine) = state else { return [] }
        state = .ready(machine: machine, lastSequence: lastCommittedSequence)
        return [
            .send(
                .welcome(
                    protocolVersion: ReplicationProtocolVersion.current,
                    settings: settings,
                    lastCommittedSequence: lastCommittedSequence
                )
            )
        ]
    }

    public mutating func machineRejected(_ error: LifeboatError) -> [Action] {
        guard case .authorizing = state else { return [] }
        return fail(error)
    }

    /// The token was redeemed and the certificate signed: hand it over and close.
    public mutating func enrollSucceeded(certificate: [UInt8], ca: [UInt8]) -> [Action] {
        guard case .enrolling = state else { return [] }
        state = .closed
        return [.send(.enrolled(certificate: certificate, ca: ca)), .close(reason: nil)]
    }

    public mutating func enrollFailed(_ error: LifeboatError) -> [Action] {
        guard case .enrolling = state else { return [] }
        return fail(error)
    }

    /// The store made the commit durable.
    public mutating func commitSucceeded(sequence: UInt64, point: UInt64, time: Timestamp) -> [Action] {
        guard case .committing(let machine, _, let current) = state, current == sequence else { return [] }
        state = .ready(machine: machine, lastSequence: sequence)
        return [.send(.commitAck(sequence: sequence, point: point, time: time))]
    }

    /// The store could not make the commit durable (full disk, …); nothing of it is visible.
    public mutating func commitFailed(sequence: UInt64, error: LifeboatError) -> [Action] {
        guard case .committing(let machine, let last, let current) = state, current == sequence else { return [] }
        state = .ready(machine: machine, lastSequence: last)
        return [.send(.commitFailed(sequence: sequence, code: error.code.rawValue, message: error.message))]
    }

    /// New settings for the agent (throttle, freeze limit).
    public mutating func settingsChanged(_ settings: AgentSettings) -> [Action] {
        switch state {
        case .ready, .receiving, .committing: return [.send(.settings(settings))]
        default: return []
        }
    }

    /// The transport closed (or failed). A commit still receiving is abandoned; one already committing
    /// finishes, and the agent learns its fate from WELCOME's last committed sequence when it reconnects.
    public mutating func connectionClosed() -> [Action] {
        defer { state = .closed }
        if case .receiving(_, _, let commit) = state { return [.abandonCommit(sequence: commit.sequence)] }
        return []
    }

    static func validate(_ volumes: [VolumeInfo]) throws {
        guard !volumes.isEmpty else { throw LifeboatError.protocolViolation("a machine needs at least one volume") }
        var seen = Set<String>()
        for v in volumes {
            try Names.validate(v.name, kind: "volume")
            guard seen.insert(v.name).inserted else {
                throw LifeboatError.protocolViolation("volume '\(v.name)' is listed twice")
            }
        }
    }
}
