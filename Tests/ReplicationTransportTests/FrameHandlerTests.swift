import LifeboatCore
import LifeboatTesting
import NIOCore
import NIOEmbedded
import ReplicationProtocol
import ReplicationTransport
import Testing

/// The channel handlers the agent and the server put after TLS: what the encoder writes is exactly the codec's
/// frame (an extent's data written straight into the buffer), and the decoder, which decodes frames where they
/// lie in the receive buffer, returns the same messages however the stream is cut.
@Suite("Frame handlers")
struct FrameHandlerTests {
    static let messages: [Message] = [
        .hello(protocolVersion: ReplicationProtocolVersion.current, agentVersion: "1", machine: "db-01", volumes: [VolumeInfo(name: "sda", size: 1 << 30)]),
        .extent(volume: 0, offset: 65536, encoding: 0, rawLength: 200_000, data: (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }),
        .extent(volume: 3, offset: 4096, encoding: 2, rawLength: 65536, data: [9, 8, 7]),
        .endCommit(sequence: 7, extents: 2, bytes: 265_536, consistent: true, captureTime: Timestamp(nanoseconds: 11), epochs: [3]),
        .goodbye,
    ]

    @Test("encoded frames are the codec's bytes; decoded in arbitrary pieces they are the same messages")
    func roundTripThroughTheHandlers() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addFrameCodec()
        var wire: [UInt8] = []
        for message in Self.messages {
            try channel.writeOutbound(message)
            var written = [UInt8]()
            while var buffer = try channel.readOutbound(as: ByteBuffer.self) { written += buffer.readBytes(length: buffer.readableBytes)! }
            #expect(written == FrameCodec.encode(message))
            wire += written
        }
        var rng = SeededRandom(seed: 5)
        var position = 0
        while position < wire.count {
            let n = min(wire.count - position, Int.random(in: 1...70_000, using: &rng))
            try channel.writeInbound(ByteBuffer(bytes: wire[position..<(position + n)]))
            position += n
        }
        var received: [Message] = []
        while let message = try channel.readInbound(as: Message.self) { received.append(message) }
        #expect(received == Self.messages)
        _ = try channel.finish()
    }

    @Test("a malformed frame fails the channel with protocol.malformed and yields nothing")
    func malformedFrame() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addFrameCodec()
        // An extent frame whose encoding byte is 9.
        var frame = FrameCodec.encode(.extent(volume: 0, offset: 0, encoding: 0, rawLength: 4, data: [1, 2, 3, 4]))
        frame[4 + 1 + 2 + 8] = 9
        #expect {
            try channel.writeInbound(ByteBuffer(bytes: frame))
        } throws: { error in
            (error as? LifeboatError)?.code == "protocol.malformed"
        }
        #expect(try channel.readInbound(as: Message.self) == nil)
    }
}
