import LifeboatCore
import ReplicationProtocol
import Testing

/// A small deterministic generator, so that failures reproduce.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

let sampleMessages: [Message] = [
    .hello(
        protocolVersion: ReplicationProtocolVersion.current,
        agentVersion: "0.1.0",
        machine: "db-01",
        volumes: [VolumeInfo(name: "sda", size: 8 << 30), VolumeInfo(name: "sdb", size: 4096)]
    ),
    .welcome(protocolVersion: ReplicationProtocolVersion.current, settings: AgentSettings(throttleMbps: 100, maxFreezeMilliseconds: 250), lastCommittedSequence: 41),
    .beginCommit(sequence: 42, volumes: [VolumeInfo(name: "sda", size: 8 << 30), VolumeInfo(name: "sdb", size: 4096, baseEpoch: 99)]),
    .extent(volume: 0, offset: 8192, encoding: 0, rawLength: 4096, data: [UInt8](repeating: 7, count: 4096)),
    .extent(volume: 1, offset: 0, encoding: 1, rawLength: 65536, data: [1, 2, 3]),
    .endCommit(sequence: 42, extents: 2, bytes: 69632, consistent: true, captureTime: Timestamp(nanoseconds: 1_764_470_000_123_456_789), epochs: [7, 0]),
    .commitAck(sequence: 42, point: 0xDEAD_BEEF, time: Timestamp(nanoseconds: 5)),
    .commitFailed(sequence: 42, code: "io.no-space", message: "no space left — free space"),
    .status(state: .continuous, backlogBytes: 1, syncedBytes: 2, totalBytes: 3, reason: ""),
    .status(state: .stalled, backlogBytes: 1, syncedBytes: 2, totalBytes: 3, reason: "freeze took 400 ms"),
    .settings(AgentSettings(throttleMbps: 0, maxFreezeMilliseconds: 500)),
    .ping(nonce: 9),
    .pong(nonce: 9),
    .error(code: "protocol.violation", message: "bad"),
    .goodbye,
    .enroll(token: "lbt1.abc", machine: "db-01", csr: [UInt8](repeating: 0x30, count: 600)),
    .enrolled(certificate: [1, 2, 3], ca: [4, 5]),
]

@Suite("Frame codec")
struct CodecTests {
    @Test("every message survives encode and decode", arguments: sampleMessages)
    func roundTrip(_ message: Message) throws {
        var decoder = FrameDecoder()
        decoder.append(FrameCodec.encode(message))
        #expect(try decoder.next() == message)
        #expect(try decoder.next() == nil)
        #expect(decoder.pendingBytes == 0)
    }

    @Test("a stream delivered one byte at a time decodes to the same messages in order")
    func byteByByte() throws {
        let stream = sampleMessages.flatMap { FrameCodec.encode($0) }
        var decoder = FrameDecoder()
        var out: [Message] = []
        for byte in stream {
            decoder.append([byte])
            while let m = try decoder.next() { out.append(m) }
        }
        #expect(out == sampleMessages)
    }

    @Test("a frame longer than the limit is refused before it is buffered")
    func oversizedFrame() throws {
        var decoder = FrameDecoder()
        let length = UInt32(FrameCodec.maxFrameLength + 1)
        decoder.append([UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), 4])
        #expect(throws: LifeboatError.self) { try decoder.next() }
    }

    @Test("malformed frames are errors with the protocol.malformed code")
    func malformed() {
        let cases: [[UInt8]] = [
            [0, 0, 0, 0],  // empty frame
            [0, 0, 0, 1, 99],  // unknown type
            [0, 0, 0, 2, 10, 1],  // truncated ping
            [0, 0, 0, 10, 10, 0, 0, 0, 0, 0, 0, 0, 1, 5],  // trailing byte
            [0, 0, 0, 5, 8, 42, 0, 0, 0],  // unknown replication state, truncated
            [0, 0, 0, 5, 12, 0, 2, 0xFF, 0xFE],  // invalid UTF-8 in an error code
        ]
        for bytes in cases {
            var decoder = FrameDecoder()
            decoder.append(bytes)
            do {
                _ = try decoder.next()
                Issue.record("accepted \(bytes)")
            } catch let error as LifeboatError {
                #expect(error.code == "protocol.malformed", "\(bytes): \(error)")
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }

    @Test("raw extents must carry exactly their length; offsets cannot overflow")
    func extentChecks() {
        var bad = FrameCodec.encode(.extent(volume: 0, offset: 0, encoding: 0, rawLength: 4096, data: [UInt8](repeating: 0, count: 4096)))
        bad.removeLast()  // one byte short, length prefix still says the old length → truncated stream
        bad[3] -= 1  // fix the length prefix: the frame is now consistent but carries 4095 bytes
        var decoder = FrameDecoder()
        decoder.append(bad)
        #expect(throws: LifeboatError.self) { try decoder.next() }

        var overflow = FrameDecoder()
        overflow.append(FrameCodec.encode(.extent(volume: 0, offset: UInt64.max - 10, encoding: 0, rawLength: 4096, data: [UInt8](repeating: 0, count: 4096))))
        #expect(throws: LifeboatError.self) { try overflow.next() }
    }

    /// Fuzzing: random and mutated frames never crash the decoder; they decode or fail with a protocol error.
    @Test("hostile input only ever yields messages or protocol errors")
    func fuzz() {
        var rng = SplitMix(state: 20261130)
        let valid = sampleMessages.map { FrameCodec.encode($0) }
        var decoded = 0
        var rejected = 0
        for round in 0..<30000 {
            var bytes: [UInt8]
            if round % 3 == 0 {
                bytes = (0..<Int.random(in: 0..<64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                bytes = valid.randomElement(using: &rng)!
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let i = Int.random(in: 0..<bytes.count, using: &rng)
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: bytes[i] = UInt8.random(in: 0...255, using: &rng)
                    case 1: bytes.remove(at: i)
                    default: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: i)
                    }
                    if bytes.isEmpty { break }
                }
            }
            var decoder = FrameDecoder()
            decoder.append(bytes)
            do {
                while try decoder.next() != nil { decoded += 1 }
            } catch let error as LifeboatError {
                #expect(error.code.rawValue.hasPrefix("protocol."))
                rejected += 1
            } catch {
                Issue.record("non-protocol error \(error)")
            }
        }
        #expect(decoded > 0)
        #expect(rejected > 1000)
    }
}
