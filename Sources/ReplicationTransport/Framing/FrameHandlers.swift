import LifeboatCore
public import NIOCore
public import ReplicationProtocol

/// Decodes frames from the byte stream into `Message`s (docs/replication-protocol.md). A frame longer than
/// `FrameCodec.maxFrameLength` is refused from its length alone, before anything is buffered; a malformed
/// frame fails the channel with `protocol.malformed`, which closes that connection and nothing else.
public struct FrameDecoderHandler: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = Message

    public init() {}

    public mutating func decode(buffer: inout ByteBuffer) throws -> Message? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= 1, Int(length) <= FrameCodec.maxFrameLength else {
            throw LifeboatError(
                "protocol.malformed",
                "frame of \(length) bytes is outside 1 … \(FrameCodec.maxFrameLength) bytes"
            )
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        // Decoded where it lies: only an extent's data is copied (once) into the message.
        let message = try buffer.withUnsafeReadableBytes { bytes in
            try FrameCodec.decode(frame: UnsafeRawBufferPointer(rebasing: bytes[4..<(4 + Int(length))]))
        }
        buffer.moveReaderIndex(forwardBy: 4 + Int(length))
        return message
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Message? {
        try decode(buffer: &buffer)
    }
}

/// Encodes outgoing `Message`s as frames.
public struct FrameEncoderHandler: MessageToByteEncoder {
    public typealias OutboundIn = Message

    public init() {}

    public func encode(data: Message, out: inout ByteBuffer) throws {
        // An extent's data is copied once, into the buffer, not first into a joined frame.
        let (head, body) = FrameCodec.encodeParts(data)
        out.reserveCapacity(minimumWritableBytes: head.count + body.count)
        out.writeBytes(head)
        out.writeBytes(body)
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Adds the frame decoder and encoder (after TLS).
    public func addFrameCodec() throws {
        try addHandler(ByteToMessageHandler(FrameDecoderHandler(), maximumBufferSize: FrameCodec.maxFrameLength + 4096))
        try addHandler(MessageToByteHandler(FrameEncoderHandler()))
    }
}
