public import NIOCore

/// What a client learns about an export during negotiation.
public struct NBDExportInfo: Sendable, Equatable {
    public var name: String
    public var size: UInt64
    public var isReadOnly: Bool
    public var description: String

    public init(name: String, size: UInt64, isReadOnly: Bool, description: String = "") {
        self.name = name
        self.size = size
        self.isReadOnly = isReadOnly
        self.description = description
    }

    /// The transmission flags the server sends for this export. Every connection sees the same data and a
    /// FLUSH on one makes every acknowledged write durable, so several connections are safe (CAN_MULTI_CONN).
    public var transmissionFlags: UInt16 {
        var flags = NBD.TransmissionFlags.hasFlags | NBD.TransmissionFlags.canMultiConn
        if isReadOnly {
            flags |= NBD.TransmissionFlags.readOnly
        } else {
            flags |= NBD.TransmissionFlags.sendFlush | NBD.TransmissionFlags.sendTrim
                | NBD.TransmissionFlags.sendWriteZeroes
        }
        return flags
    }
}

/// An option request of the handshake phase.
public struct NBDOptionRequest: Sendable, Equatable {
    public var option: UInt32
    public var data: ByteBuffer

    public init(option: UInt32, data: ByteBuffer) {
        self.option = option
        self.data = data
    }
}

/// A request of the transmission phase (the header; a WRITE's payload travels separately).
public struct NBDRequest: Sendable, Equatable {
    public var flags: UInt16
    public var type: UInt16
    public var cookie: UInt64
    public var offset: UInt64
    public var length: UInt32

    public init(flags: UInt16 = 0, type: UInt16, cookie: UInt64, offset: UInt64, length: UInt32) {
        self.flags = flags
        self.type = type
        self.cookie = cookie
        self.offset = offset
        self.length = length
    }
}

/// One extent of a `base:allocation` block status reply.
public struct NBDExtent: Sendable, Equatable {
    public var length: UInt32
    public var flags: UInt32

    public init(length: UInt32, flags: UInt32) {
        self.length = length
        self.flags = flags
    }
}

/// Pure encoders and decoders of NBD messages (no I/O): what the server and the tests put on the wire.
public enum NBDWire {
    // MARK: Handshake

    /// The server's greeting: magic, IHAVEOPT, handshake flags (fixed newstyle, no zeroes).
    public static func greeting() -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(NBD.initialMagic)
        b.writeInteger(NBD.optionMagic)
        b.writeInteger(NBD.HandshakeFlags.fixedNewstyle | NBD.HandshakeFlags.noZeroes)
        return b
    }

    /// An option request as a client sends it.
    public static func encode(_ option: NBDOptionRequest, into b: inout ByteBuffer) {
        b.writeInteger(NBD.optionMagic)
        b.writeInteger(option.option)
        b.writeInteger(UInt32(option.data.readableBytes))
        b.writeImmutableBuffer(option.data)
    }

    /// Decodes one option request; nil when more bytes are needed. Throws on a bad magic or an option
    /// longer than `NBD.maxOptionLength` (nothing is consumed then).
    public static func decodeOption(from b: inout ByteBuffer) throws(NBDWireError) -> NBDOptionRequest? {
        guard b.readableBytes >= 16,
            let magic: UInt64 = b.getInteger(at: b.readerIndex),
            let option: UInt32 = b.getInteger(at: b.readerIndex + 8),
            let length: UInt32 = b.getInteger(at: b.readerIndex + 12)
        else { return nil }
        guard magic == NBD.optionMagic else {
            throw NBDWireError("option request with a bad magic 0x\(String(magic, radix: 16))")
        }
        guard Int(length) <= NBD.maxOptionLength else {
            throw NBDWireError("option \(option) of \(length) bytes is longer than \(NBD.maxOptionLength)")
        }
        guard b.readableBytes >= 16 + Int(length) else { return nil }
        b.moveReaderIndex(forwardBy: 16)
        let data = b.readSlice(length: Int(length))!
        return NBDOptionRequest(option: option, data: data)
    }

    /// An option reply: magic, option, type, length, data.
    public static func optionReply(_ option: UInt32, _ type: UInt32, _ data: ByteBuffer = ByteBuffer(), into b: inout ByteBuffer) {
        b.writeInteger(NBD.optionReplyMagic)
        b.writeInteger(option)
        b.writeInteger(type)
        b.writeInteger(UInt32(data.readableBytes))
        b.writeImmutableBuffer(data)
    }

    /// An error reply with a human-readable message.
    public static func optionError(_ option: UInt32, _ type: UInt32, _ message: String, into b: inout ByteBuffer) {
        optionReply(option, type, ByteBuffer(string: message), into: &b)
    }

    /// `NBD_REP_INFO` / `NBD_INFO_EXPORT`: size and transmission flags.
    public static func infoExport(_ option: UInt32, _ export: NBDExportInfo, into b: inout ByteBuffer) {
        var d = ByteBuffer()
        d.writeInteger(NBD.Info.export)
        d.writeInteger(export.size)
        d.writeInteger(export.transmissionFlags)
        optionReply(option, NBD.Reply.info, d, into: &b)
    }

    /// `NBD_REP_INFO` / `NBD_INFO_NAME`.
    public static func infoName(_ option: UInt32, _ name: String, into b: inout ByteBuffer) {
        var d = ByteBuffer()
        d.writeInteger(NBD.Info.name)
        d.writeString(name)
        optionReply(option, NBD.Reply.info, d, into: &b)
    }

    /// `NBD_REP_INFO` / `NBD_INFO_DESCRIPTION`.
    public static func infoDescription(_ option: UInt32, _ text: String, into b: inout ByteBuffer) {
        var d = ByteBuffer()
        d.writeInteger(NBD.Info.description)
        d.writeString(text)
        optionReply(option, NBD.Reply.info, d, into: &b)
    }

    /// `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`: minimum, preferred, maximum.
    public static func infoBlockSize(_ option: UInt32, minimum: UInt32, into b: inout ByteBuffer) {
        var d = ByteBuffer()
        d.writeInteger(NBD.Info.blockSize)
        d.writeInteger(minimum)
        d.writeInteger(NBD.preferredBlockSize)
        d.writeInteger(UInt32(NBD.maxPayload))
        optionReply(option, NBD.Reply.info, d, into: &b)
    }

    /// `NBD_REP_SERVER`: one export of a LIST.
    public static func server(_ export: NBDExportInfo, into b: inout ByteBuffer) {
        var d = ByteBuffer()
        d.writeInteger(UInt32(export.name.utf8.count))
        d.writeString(export.name)
        d.writeString(export.description)
        optionReply(NBD.Option.list, NBD.Reply.server, d, into: &b)
    }

    /// `NBD_REP_META_CONTEXT`: a context id and its name.
    public static func metaContext(_ option: UInt32, id: UInt32, name: String, into b: inout ByteBuffer) {
        var d = ByteBuffer()
        d.writeInteger(id)
        d.writeString(name)
        optionReply(option, NBD.Reply.metaContext, d, into: &b)
    }

    /// The reply to `NBD_OPT_EXPORT_NAME` (no reply header): size, flags, then 124 zeroes unless NO_ZEROES.
    public static func exportNameReply(_ export: NBDExportInfo, noZeroes: Bool, into b: inout ByteBuffer) {
        b.writeInteger(export.size)
        b.writeInteger(export.transmissionFlags)
        if !noZeroes { b.writeRepeatingByte(0, count: 124) }
    }

    // MARK: Transmission

    /// A request as a client sends it (payload appended for WRITE).
    public static func encode(_ request: NBDRequest, payload: ByteBuffer? = nil, into b: inout ByteBuffer) {
        b.writeInteger(NBD.requestMagic)
        b.writeInteger(request.flags)
        b.writeInteger(request.type)
        b.writeInteger(request.cookie)
        b.writeInteger(request.offset)
        b.writeInteger(request.length)
        if let payload { b.writeImmutableBuffer(payload) }
    }

    /// Decodes a request header without consuming it; nil when fewer than 28 bytes are there.
    public static func peekRequest(in b: ByteBuffer) throws(NBDWireError) -> NBDRequest? {
        guard b.readableBytes >= NBD.requestHeaderSize else { return nil }
        let at = b.readerIndex
        let magic: UInt32 = b.getInteger(at: at)!
        guard magic == NBD.requestMagic else {
            throw NBDWireError("request with a bad magic 0x\(String(magic, radix: 16))")
        }
        return NBDRequest(
            flags: b.getInteger(at: at + 4)!,
            type: b.getInteger(at: at + 6)!,
            cookie: b.getInteger(at: at + 8)!,
            offset: b.getInteger(at: at + 16)!,
            length: b.getInteger(at: at + 24)!
        )
    }

    /// A simple reply header (READ data follows it).
    public static func simpleReply(cookie: UInt64, error: UInt32, into b: inout ByteBuffer) {
        b.writeInteger(NBD.simpleReplyMagic)
        b.writeInteger(error)
        b.writeInteger(cookie)
    }

    /// A structured reply chunk header; `length` counts the chunk's payload.
    public static func chunkHeader(cookie: UInt64, type: UInt16, flags: UInt16, length: UInt32, into b: inout ByteBuffer) {
        b.writeInteger(NBD.structuredReplyMagic)
        b.writeInteger(flags)
        b.writeInteger(type)
        b.writeInteger(cookie)
        b.writeInteger(length)
    }

    /// The 28 bytes that start a final `OFFSET_DATA` chunk of `dataLength` bytes (the data follows).
    public static func offsetDataHeader(cookie: UInt64, offset: UInt64, dataLength: Int, into b: inout ByteBuffer) {
        chunkHeader(cookie: cookie, type: NBD.Chunk.offsetData, flags: NBD.Chunk.flagDone, length: UInt32(8 + dataLength), into: &b)
        b.writeInteger(offset)
    }

    /// A final `OFFSET_HOLE` chunk: the range reads as zeroes.
    public static func offsetHole(cookie: UInt64, offset: UInt64, length: UInt32, into b: inout ByteBuffer) {
        chunkHeader(cookie: cookie, type: NBD.Chunk.offsetHole, flags: NBD.Chunk.flagDone, length: 12, into: &b)
        b.writeInteger(offset)
        b.writeInteger(length)
    }

    /// A final `BLOCK_STATUS` chunk for one meta context.
    public static func blockStatus(cookie: UInt64, context: UInt32, extents: [NBDExtent], into b: inout ByteBuffer) {
        chunkHeader(
            cookie: cookie,
            type: NBD.Chunk.blockStatus,
            flags: NBD.Chunk.flagDone,
            length: UInt32(4 + 8 * extents.count),
            into: &b
        )
        b.writeInteger(context)
        for e in extents {
            b.writeInteger(e.length)
            b.writeInteger(e.flags)
        }
    }

    /// A final `ERROR` chunk with a message.
    public static func errorChunk(cookie: UInt64, error: UInt32, message: String, into b: inout ByteBuffer) {
        let text = Array(message.utf8.prefix(1024))
        chunkHeader(cookie: cookie, type: NBD.Chunk.error, flags: NBD.Chunk.flagDone, length: UInt32(6 + text.count), into: &b)
        b.writeInteger(error)
        b.writeInteger(UInt16(text.count))
        b.writeBytes(text)
    }

    /// A final `NONE` chunk: success without data (for commands other than READ and BLOCK_STATUS).
    public static func noneChunk(cookie: UInt64, into b: inout ByteBuffer) {
        chunkHeader(cookie: cookie, type: NBD.Chunk.none, flags: NBD.Chunk.flagDone, length: 0, into: &b)
    }
}

/// Bytes that are not NBD: the connection that sent them is closed.
public struct NBDWireError: Error, Sendable, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
