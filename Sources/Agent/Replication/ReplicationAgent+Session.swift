import ChangeTracking
import LifeboatCore
import Logging
import NIOCore
import ReplicationProtocol
import ReplicationTransport

/// The iterator of frames from the server and the writer of frames to it, with the session's state machine.
final class SessionChannel {
    var frames: AsyncThrowingStream<Message, any Error>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<Message>
    var machine = AgentSessionStateMachine()

    init(frames: AsyncThrowingStream<Message, any Error>.AsyncIterator, outbound: NIOAsyncChannelOutboundWriter<Message>) {
        self.frames = frames
        self.outbound = outbound
    }

    /// Sends what the state machine says to send; returns the other actions.
    @discardableResult
    func perform(_ actions: [AgentSessionStateMachine.Action]) async throws -> [AgentSessionStateMachine.Action] {
        var rest: [AgentSessionStateMachine.Action] = []
        for action in actions {
            if case .send(let message) = action {
                try await outbound.write(message)
            } else {
                rest.append(action)
            }
        }
        return rest
    }

    /// Reads frames until the state machine produces something other than sends (answered pings) and settings
    /// (the reader task applied those as they arrived).
    func nextEvent() async throws -> AgentSessionStateMachine.Action {
        while true {
            guard let message = try await frames.next() else {
                let actions = machine.connectionClosed()
                if let first = actions.first { return first }
                throw LifeboatError("connection.lost", "the replication server closed the connection")
            }
            for action in try await perform(machine.received(message)) {
                if case .settingsChanged = action { continue }
                return action
            }
        }
    }
}

extension ReplicationAgent {
    /// One connection: hello, settle the commit whose fate is unknown, then cycles. True when done.
    func session() async throws -> Bool {
        let connection = try await ServerConnection.open(address, context: sslContext)
        return try await connection.executeThenClose { inbound, outbound in
            // A reader task takes every frame as it arrives, so that settings (throttle, freeze limit, pause) apply
            // at once, even while the session sends extents or sleeps between cycles; the session reads the frames
            // in order from the stream.
            let (messages, continuation) = AsyncThrowingStream<Message, any Error>.makeStream()
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { [self] in
                    do {
                        for try await message in inbound {
                            if case .settings(let settings) = message { apply(settings) }
                            continuation.yield(message)
                        }
                        continuation.finish()
                    } catch {
                        continuation.finish(throwing: error)
                    }
                }
                defer {
                    // The reader task ends when the connection does (iterating NIO's inbound stream does not end
                    // on cancellation alone).
                    group.cancelAll()
                    connection.channel.close(promise: nil)
                }
                return try await converse(SessionChannel(frames: messages.makeAsyncIterator(), outbound: outbound))
            }
        }
    }

    /// The session on an open connection: hello, settle the commit whose fate is unknown, then cycles.
    private func converse(_ channel: SessionChannel) async throws -> Bool {
        let volumes = try trackers.map { entry in
            VolumeInfo(name: entry.volume.name, size: try VolumeDiscovery.describe(path: entry.volume.path).size)
        }
        try await channel.perform(
            channel.machine.connected(agentVersion: LifeboatVersion.current, machine: identity.machine, volumes: volumes)
        )
        let welcome = try await channel.nextEvent()
        guard case .established(let settings, let last) = welcome else {
            throw Self.sessionError(welcome, while: "waiting for the server's welcome")
        }
        apply(settings)
        established.value = true
        try settlePending(lastCommitted: last)
        logger.info("connected", metadata: ["server": "\(address)", "last-sequence": "\(last)"])

        var sequence = last
        var lastCommit: ContinuousClock.Instant?
        var inconsistentInARow = 0
        while true {
            if isStopping {
                try? await channel.outbound.write(
                    .status(state: .stopped, backlogBytes: 0, syncedBytes: 0, totalBytes: 0, reason: "the agent was stopped")
                )
                try? await channel.outbound.write(.goodbye)
                return true
            }
            if paused.value {
                try await waitWhilePaused(channel)
                continue
            }
            let started = ContinuousClock.now
            let heartbeatDue = options.once || lastCommit.map { started - $0 >= options.heartbeatInterval } ?? true
            var outcome = try await cycle(sequence: sequence + 1, channel: channel, commitEvenIfUnchanged: heartbeatDue)
            outcome.duration = ContinuousClock.now - started
            status.lastOutcome = outcome
            switch outcome.kind {
            case .committed(_, let consistent):
                sequence += 1
                lastCommit = started
                if options.once && consistent {
                    try? await channel.outbound.write(.goodbye)
                    return true
                }
                inconsistentInARow = consistent ? 0 : inconsistentInARow + 1
                if options.once && inconsistentInARow >= 5 {
                    try? await channel.outbound.write(.goodbye)
                    throw LifeboatError(
                        "agent.no-consistent-point",
                        "5 commits in a row could not be captured crash-consistently: \(outcome.inconsistencyReason ?? "unknown reason")"
                    )
                }
            case .initialSyncPart:
                sequence += 1
                lastCommit = started
                continue  // the next part at once
            case .unchanged:
                break
            case .rejected:
                if options.once {
                    throw LifeboatError("agent.commit-rejected", "the server did not store the commit: \(outcome.kindDescription)")
                }
            }
            let elapsed = ContinuousClock.now - started
            if elapsed < options.cycleInterval { try await sleep(options.cycleInterval - elapsed, channel: channel) }
        }
    }

    /// While an operator has replication paused: reports PAUSED, keeps the connection alive, sends nothing.
    /// `--once` fails instead of waiting.
    private func waitWhilePaused(_ channel: SessionChannel) async throws {
        let machine = identity.machine
        status.set(.paused, reason: "paused on the server; resume with 'lifeboat machines resume \(machine)'")
        try await report(channel, SendProgress(total: 0))
        if options.once {
            try? await channel.outbound.write(.goodbye)
            throw LifeboatError(
                "agent.paused",
                "replication of '\(machine)' is paused on the server: resume it with 'lifeboat machines resume \(machine)', then run again"
            )
        }
        logger.notice("replication paused by the server")
        while paused.value && !isStopping {
            try await sleep(.milliseconds(200), channel: channel)
        }
        guard !isStopping else { return }
        logger.notice("replication resumed")
        status.set(.continuous)
        try await report(channel, SendProgress(total: 0))
    }

    /// Applies settings from the server, unless overridden locally.
    func apply(_ settings: AgentSettings) {
        paused.value = settings.paused
        throttle.setRate(megabitsPerSecond: options.throttleMbps ?? settings.throttleMbps)
        maxFreeze.value = Duration.milliseconds(Int64(options.maxFreezeMilliseconds ?? settings.maxFreezeMilliseconds))
        keepalive.value = Duration.milliseconds(Int64(max(100, settings.keepaliveMilliseconds)))
    }

    /// A commit sent before a crash or a lost connection: it landed if the server's last committed sequence
    /// reached it (forget its changes), otherwise its changes are still pending in the trackers.
    func settlePending(lastCommitted: UInt64) throws {
        guard let pending = PendingCommit.load(state) else { return }
        if lastCommitted >= pending.sequence {
            for (volume, tracker) in trackers {
                guard let epoch = pending.epochs[volume.name] else { continue }
                do {
                    try tracker.acknowledge(epoch: epoch)
                } catch let error as LifeboatError where error.code == "tracker.unknown-epoch" {
                    // From before a restart: the tracker no longer holds that epoch and still builds on the older
                    // one; the next commit names that base and the server builds on it (not on the latest).
                    logger.info("commit landed before a restart; the next one builds on the older base", metadata: ["volume": "\(volume.name)"])
                }
            }
            if let after = pending.initialSyncAfter { try after.write(state) }
            if pending.completesInitialSync == true { try InitialSyncProgress.remove(state) }
            logger.info("an unacknowledged commit had landed", metadata: ["sequence": "\(pending.sequence)"])
        } else {
            for (volume, tracker) in trackers {
                if let epoch = pending.epochs[volume.name] { tracker.abandon(epoch: epoch) }
            }
            logger.info("an unacknowledged commit had not landed; its changes are sent again", metadata: ["sequence": "\(pending.sequence)"])
        }
        try PendingCommit.remove(state)
    }

    static func sessionError(_ action: AgentSessionStateMachine.Action, while what: String) -> LifeboatError {
        switch action {
        case .closed(let reason?, _):
            return LifeboatError(LifeboatError.Code(reason.code), "the server closed the session \(what): \(reason.message)")
        case .closed(nil, _):
            return LifeboatError("connection.lost", "the server closed the session \(what)")
        default:
            return LifeboatError("protocol.violation", "unexpected \(action) \(what)")
        }
    }
}

extension CycleOutcome {
    var kindDescription: String {
        switch kind {
        case .committed(let point, let consistent): "committed as point \(point) (consistent: \(consistent))"
        case .initialSyncPart(let point, let done, let left): "initial sync part committed as \(point) (\(done) bytes durable, \(left) to go)"
        case .unchanged: "unchanged"
        case .rejected(let code, let message): "[\(code)] \(message)"
        }
    }
}

/// The version this agent reports in HELLO.
public enum LifeboatVersion {
    public static let current = "0.3.0"
}
