import LifeboatCore
import ReplicationProtocol
import Testing

typealias Server = ServerSessionStateMachine
typealias Agent = AgentSessionStateMachine

let volumes = [VolumeInfo(name: "sda", size: 1 << 20), VolumeInfo(name: "sdb", size: 10_000)]

/// Frames the server sends, decoded again through the codec (as they would cross the wire).
func sent(_ actions: [Server.Action]) throws -> [Message] {
    try actions.compactMap {
        guard case .send(let m) = $0 else { return nil }
        var d = FrameDecoder()
        d.append(FrameCodec.encode(m))
        return try d.next()
    }
}

func sent(_ actions: [Agent.Action]) -> [Message] {
    actions.compactMap {
        guard case .send(let m) = $0 else { return nil }
        return m
    }
}

func ready(last: UInt64 = 0) -> Server {
    var s = Server(certifiedMachine: "m1")
    _ = s.received(.hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "m1", volumes: volumes))
    _ = s.machineAccepted(settings: AgentSettings(), lastCommittedSequence: last)
    return s
}

func closes(_ actions: [Server.Action]) -> Bool {
    actions.contains { if case .close = $0 { return true } else { return false } }
}

@Suite("Session state machines")
struct SessionTests {
    @Test("agent and server drive a commit to an acknowledgement")
    func happyPath() throws {
        var agent = Agent()
        var server = Server(certifiedMachine: "m1")
        var toServer = try sent(agent.connected(agentVersion: "0.1", machine: "m1", volumes: volumes))
        let actions = server.received(toServer[0])
        #expect(actions == [.authorize(machine: "m1", volumes: volumes)])
        let welcome = try sent(server.machineAccepted(settings: AgentSettings(throttleMbps: 50), lastCommittedSequence: 6))
        #expect(agent.received(welcome[0]) == [.established(settings: AgentSettings(throttleMbps: 50), lastCommittedSequence: 6)])

        toServer = try sent(agent.beginCommit(sequence: 7, volumes: volumes))
        #expect(server.received(toServer[0]) == [.beginCommit(machine: "m1", sequence: 7, volumes: volumes)])
        let block = [UInt8](repeating: 9, count: 4096)
        toServer = try sent(agent.extent(volume: 0, offset: 4096, encoding: 0, rawLength: 4096, data: block))
        #expect(server.received(toServer[0]) == [.writeExtent(volume: "sda", offset: 4096, encoding: 0, rawLength: 4096, data: block)])
        // The last extent of a volume may end at its size, unaligned.
        let tail = [UInt8](repeating: 1, count: 10_000 - 8192)
        toServer = try sent(agent.extent(volume: 1, offset: 8192, encoding: 0, rawLength: UInt32(tail.count), data: tail))
        #expect(server.received(toServer[0]).count == 1)
        let time = Timestamp(seconds: 1_764_470_000)
        toServer = try sent(agent.endCommit(consistent: true, captureTime: time, epochs: [1, 2]))
        #expect(server.received(toServer[0]) == [.finishCommit(sequence: 7, consistent: true, captureTime: time, epochs: [1, 2])])
        let ack = try sent(server.commitSucceeded(sequence: 7, point: 77, time: time))
        #expect(agent.received(ack[0]) == [.committed(sequence: 7, point: 77, time: time)])
        #expect(agent.isReady)
        // The next commit must use a higher sequence, on both sides.
        #expect(throws: LifeboatError.self) { try agent.beginCommit(sequence: 7, volumes: volumes) }
        #expect(closes(server.received(.beginCommit(sequence: 7, volumes: volumes))))
    }

    @Test("a failed commit leaves both sides ready for a retry")
    func failedCommit() throws {
        var agent = Agent()
        var server = ready()
        _ = try agent.connected(agentVersion: "t", machine: "m1", volumes: volumes)
        _ = agent.received(.welcome(protocolVersion: ReplicationProtocolVersion.current, settings: AgentSettings(), lastCommittedSequence: 0))
        for m in sent(try agent.beginCommit(sequence: 1, volumes: volumes)) { _ = server.received(m) }
        for m in sent(try agent.endCommit(consistent: false, captureTime: Timestamp(seconds: 1), epochs: [1, 2])) { _ = server.received(m) }
        let failure = try sent(server.commitFailed(sequence: 1, error: LifeboatError("io.no-space", "disk full")))
        #expect(agent.received(failure[0]) == [.commitRejected(sequence: 1, reason: CloseReason(code: "io.no-space", message: "disk full"))])
        // Retry with the next sequence is accepted by the server (its last committed is still 0).
        #expect(server.received(.beginCommit(sequence: 2, volumes: volumes)) == [.beginCommit(machine: "m1", sequence: 2, volumes: volumes)])
    }

    @Test("the server refuses a broken protocol and abandons the open commit", arguments: [
        Message.extent(volume: 0, offset: 100, encoding: 0, rawLength: 4096, data: [UInt8](repeating: 0, count: 4096)),  // misaligned
        Message.extent(volume: 0, offset: 1 << 20, encoding: 0, rawLength: 4096, data: [UInt8](repeating: 0, count: 4096)),  // beyond the end
        Message.extent(volume: 5, offset: 0, encoding: 0, rawLength: 4096, data: [UInt8](repeating: 0, count: 4096)),  // unknown volume
        Message.extent(volume: 0, offset: 0, encoding: 0, rawLength: 100, data: [UInt8](repeating: 0, count: 100)),  // short, not at the end
        Message.endCommit(sequence: 1, extents: 3, bytes: 0, consistent: true, captureTime: Timestamp(seconds: 0), epochs: [1, 2]),  // count mismatch
        Message.endCommit(sequence: 2, extents: 0, bytes: 0, consistent: true, captureTime: Timestamp(seconds: 0), epochs: [1, 2]),  // wrong sequence
        Message.beginCommit(sequence: 2, volumes: volumes),  // nested commit
        Message.hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "m1", volumes: volumes),  // second hello
    ])
    func violationsInsideACommit(_ message: Message) {
        var server = ready()
        _ = server.received(.beginCommit(sequence: 1, volumes: volumes))
        let actions = server.received(message)
        #expect(actions.first == .abandonCommit(sequence: 1))
        #expect(closes(actions))
        #expect(actions.contains { if case .send(.error) = $0 { return true } else { return false } })
        #expect(server.isClosed)
        #expect(server.received(.ping(nonce: 1)).isEmpty)
    }

    @Test("frames out of place before and after the handshake close the connection", arguments: [
        Message.beginCommit(sequence: 1, volumes: volumes),
        Message.extent(volume: 0, offset: 0, encoding: 0, rawLength: 4096, data: [UInt8](repeating: 0, count: 4096)),
        Message.commitAck(sequence: 1, point: 1, time: Timestamp(seconds: 0)),
        Message.welcome(protocolVersion: ReplicationProtocolVersion.current, settings: AgentSettings(), lastCommittedSequence: 0),
    ])
    func violationsBeforeHello(_ message: Message) {
        var server = Server(certifiedMachine: "m1")
        #expect(closes(server.received(message)))
        var afterHello = ready()
        if case .beginCommit = message { return }  // legal once ready
        #expect(closes(afterHello.received(message)))
    }

    @Test("a hello with another protocol version, a bad machine name or duplicate volumes is refused")
    func badHello() {
        let hellos: [Message] = [
            .hello(protocolVersion: ReplicationProtocolVersion.current + 1, agentVersion: "t", machine: "m1", volumes: volumes),
            .hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "../etc", volumes: volumes),
            .hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "m1", volumes: []),
            .hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "m1", volumes: [volumes[0], volumes[0]]),
        ]
        for hello in hellos {
            var server = Server(certifiedMachine: "m1")
            #expect(closes(server.received(hello)), "\(hello)")
        }
        var server = Server(certifiedMachine: "m1")
        _ = server.received(.hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "m1", volumes: volumes))
        #expect(closes(server.machineRejected(LifeboatError("agent.revoked", "machine m1 was removed"))))
    }

    @Test("connection loss: a receiving commit is abandoned; an unanswered commit is reported to the agent")
    func connectionLoss() throws {
        var server = ready()
        _ = server.received(.beginCommit(sequence: 1, volumes: volumes))
        #expect(server.connectionClosed() == [.abandonCommit(sequence: 1)])

        var committing = ready()
        _ = committing.received(.beginCommit(sequence: 1, volumes: volumes))
        _ = committing.received(.endCommit(sequence: 1, extents: 0, bytes: 0, consistent: true, captureTime: Timestamp(seconds: 0), epochs: [1, 2]))
        #expect(committing.connectionClosed().isEmpty)  // the store finishes it; the agent asks on reconnect

        var agent = Agent()
        _ = try agent.connected(agentVersion: "t", machine: "m1", volumes: volumes)
        _ = agent.received(.welcome(protocolVersion: ReplicationProtocolVersion.current, settings: AgentSettings(), lastCommittedSequence: 0))
        _ = try agent.beginCommit(sequence: 1, volumes: volumes)
        _ = try agent.endCommit(consistent: true, captureTime: Timestamp(seconds: 0), epochs: [1, 2])
        let actions = agent.connectionClosed()
        guard case .closed(_, let pending) = actions.first else {
            Issue.record("expected closed, got \(actions)")
            return
        }
        #expect(pending == 1)
    }

    @Test("pings are answered, status is recorded, settings reach the agent")
    func housekeeping() throws {
        var server = ready()
        #expect(server.received(.ping(nonce: 5)) == [.send(.pong(nonce: 5))])
        #expect(
            server.received(.status(state: .backlog, backlogBytes: 10, syncedBytes: 1, totalBytes: 2, reason: "busy"))
                == [.recordStatus(state: .backlog, backlogBytes: 10, syncedBytes: 1, totalBytes: 2, reason: "busy")]
        )
        #expect(server.settingsChanged(AgentSettings(throttleMbps: 10)) == [.send(.settings(AgentSettings(throttleMbps: 10)))])
        var agent = Agent()
        _ = try agent.connected(agentVersion: "t", machine: "m1", volumes: volumes)
        _ = agent.received(.welcome(protocolVersion: ReplicationProtocolVersion.current, settings: AgentSettings(), lastCommittedSequence: 0))
        #expect(agent.received(.settings(AgentSettings(throttleMbps: 10))) == [.settingsChanged(AgentSettings(throttleMbps: 10))])
        #expect(agent.received(.ping(nonce: 3)) == [.send(.pong(nonce: 3))])
        #expect(server.received(.goodbye) == [.close(reason: nil)])
    }

    /// Every frame type in every server state: the machine never traps and always ends in a defined state.
    @Test("exhaustive: every message in every server state")
    func exhaustive() {
        let setups: [(String, () -> Server)] = [
            ("new", { Server(certifiedMachine: "m1") }),
            ("authorizing", {
                var s = Server(certifiedMachine: "m1")
                _ = s.received(.hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "m1", volumes: volumes))
                return s
            }),
            ("ready", { ready() }),
            ("receiving", {
                var s = ready()
                _ = s.received(.beginCommit(sequence: 1, volumes: volumes))
                return s
            }),
            ("committing", {
                var s = ready()
                _ = s.received(.beginCommit(sequence: 1, volumes: volumes))
                _ = s.received(.endCommit(sequence: 1, extents: 0, bytes: 0, consistent: true, captureTime: Timestamp(seconds: 0), epochs: [1, 2]))
                return s
            }),
        ]
        for (name, make) in setups {
            for message in sampleMessages {
                var s = make()
                let actions = s.received(message)
                // Any close that happens inside a commit also abandons it.
                if name == "receiving", closes(actions), case .goodbye = message {} else if name == "receiving", closes(actions) {
                    #expect(actions.contains(.abandonCommit(sequence: 1)), "\(name) + \(message.type)")
                }
                if s.isClosed { #expect(s.received(.ping(nonce: 0)).isEmpty) }
            }
        }
    }

    @Test("without a client certificate a peer may only enroll; with one, only as the machine it names")
    func certificateIdentity() throws {
        var anonymous = Server(certifiedMachine: nil)
        let refused = anonymous.received(.hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "m1", volumes: volumes))
        #expect(refused.contains { if case .send(.error("auth.certificate-required", _)) = $0 { true } else { false } })
        #expect(anonymous.isClosed)

        var impostor = Server(certifiedMachine: "m2")
        let mismatch = impostor.received(.hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "t", machine: "m1", volumes: volumes))
        #expect(mismatch.contains { if case .send(.error("auth.machine-mismatch", _)) = $0 { true } else { false } })

        var enrolling = Server(certifiedMachine: nil)
        #expect(enrolling.received(.enroll(token: "t", machine: "m1", csr: [1])) == [.enroll(token: "t", machine: "m1", csr: [1])])
        #expect(enrolling.machine == "m1")
        #expect(enrolling.enrollSucceeded(certificate: [9], ca: [8]) == [.send(.enrolled(certificate: [9], ca: [8])), .close(reason: nil)])
        #expect(enrolling.isClosed)

        var badName = Server(certifiedMachine: nil)
        #expect(closes(badName.received(.enroll(token: "t", machine: "../x", csr: [1]))))

        var failing = Server(certifiedMachine: nil)
        _ = failing.received(.enroll(token: "t", machine: "m1", csr: [1]))
        let failed = failing.enrollFailed(LifeboatError("enroll.bad-token", "unknown token"))
        #expect(failed.contains(.send(.error(code: "enroll.bad-token", message: "unknown token"))))
        #expect(failing.isClosed)

        // Nothing else is accepted while enrolling: one exchange per connection.
        for message in sampleMessages {
            var s = Server(certifiedMachine: nil)
            _ = s.received(.enroll(token: "t", machine: "m1", csr: [1]))
            let actions = s.received(message)
            if case .ping = message { continue }
            #expect(closes(actions) || actions.isEmpty, "\(message.type) during enrollment")
        }
    }

    @Test("a commit names the state each volume builds on and the states it creates; a wrong count closes")
    func epochsTravel() throws {
        var server = ready()
        let based = [VolumeInfo(name: "sda", size: 1 << 20, baseEpoch: 17), volumes[1]]
        #expect(server.received(.beginCommit(sequence: 1, volumes: based)) == [.beginCommit(machine: "m1", sequence: 1, volumes: based)])
        var wrong = server
        let end = Message.endCommit(sequence: 1, extents: 0, bytes: 0, consistent: true, captureTime: Timestamp(seconds: 3), epochs: [18, 4])
        #expect(server.received(end) == [.finishCommit(sequence: 1, consistent: true, captureTime: Timestamp(seconds: 3), epochs: [18, 4])])
        let short = wrong.received(.endCommit(sequence: 1, extents: 0, bytes: 0, consistent: true, captureTime: Timestamp(seconds: 3), epochs: [18]))
        #expect(closes(short))
        #expect(short.contains(.abandonCommit(sequence: 1)))
    }
}
