public import NIOCore

/// The transmission phase without I/O: splits the byte stream into requests and decides which ones are
/// refused before they reach an export.
public struct NBDTransmission: Sendable {
    public enum Event: Sendable, Equatable {
        case needMoreData
        /// A request to run; `payload` holds a WRITE's data.
        case request(NBDRequest, payload: ByteBuffer?)
        /// A request refused without running it (the payload of a refused WRITE is skipped).
        case refuse(NBDRequest, error: UInt32, message: String)
        /// Bytes that are not a request: close the connection.
        case protocolError(String)
    }

    public let session: NBDSession
    /// Payload bytes of a refused WRITE still to skip.
    private var discarding = 0

    public init(session: NBDSession) {
        self.session = session
    }

    /// Takes the next request from `buffer`.
    public mutating func next(from buffer: inout ByteBuffer) -> Event {
        if discarding > 0 {
            let n = min(discarding, buffer.readableBytes)
            buffer.moveReaderIndex(forwardBy: n)
            discarding -= n
            if discarding > 0 { return .needMoreData }
        }
        let request: NBDRequest
        do {
            guard let r = try NBDWire.peekRequest(in: buffer) else { return .needMoreData }
            request = r
        } catch {
            return .protocolError(error.description)
        }
        let hasPayload = request.type == NBD.Command.write
        if hasPayload, let (error, message) = refusal(of: request) {
            buffer.moveReaderIndex(forwardBy: NBD.requestHeaderSize)
            let skip = min(Int(request.length), buffer.readableBytes)
            buffer.moveReaderIndex(forwardBy: skip)
            discarding = Int(request.length) - skip
            return .refuse(request, error: error, message: message)
        }
        if hasPayload {
            guard buffer.readableBytes >= NBD.requestHeaderSize + Int(request.length) else { return .needMoreData }
            buffer.moveReaderIndex(forwardBy: NBD.requestHeaderSize)
            return .request(request, payload: buffer.readSlice(length: Int(request.length))!)
        }
        buffer.moveReaderIndex(forwardBy: NBD.requestHeaderSize)
        if let (error, message) = refusal(of: request) {
            return .refuse(request, error: error, message: message)
        }
        return .request(request, payload: nil)
    }

    /// Why a request must not run, as an NBD error and a message; nil if it may.
    public func refusal(of r: NBDRequest) -> (UInt32, String)? {
        let size = session.export.size
        let export = session.export
        func range() -> (UInt32, String)? {
            guard r.length > 0 else { return (NBD.ReplyError.invalid, "a request of length 0") }
            guard r.offset <= size, UInt64(r.length) <= size - r.offset else {
                return (
                    NBD.ReplyError.invalid,
                    "\(r.length) bytes at \(r.offset) lie beyond the end of export '\(export.name)' (\(size) bytes)"
                )
            }
            return nil
        }
        func payload() -> (UInt32, String)? {
            guard Int(r.length) <= NBD.maxPayload else {
                return (NBD.ReplyError.overflow, "\(r.length) bytes exceed the maximum payload of \(NBD.maxPayload)")
            }
            return nil
        }
        func writable() -> (UInt32, String)? {
            export.isReadOnly ? (NBD.ReplyError.permission, "export '\(export.name)' is read-only") : nil
        }
        switch r.type {
        case NBD.Command.read:
            return payload() ?? range()
        case NBD.Command.write:
            return payload() ?? writable() ?? range()
        case NBD.Command.trim, NBD.Command.writeZeroes:
            return writable() ?? range()
        case NBD.Command.flush, NBD.Command.disconnect:
            return nil
        case NBD.Command.blockStatus:
            guard session.allocationContext != nil else {
                return (NBD.ReplyError.invalid, "BLOCK_STATUS without a selected meta context")
            }
            return range()
        default:
            return (NBD.ReplyError.invalid, "command \(r.type) is not supported")
        }
    }

    // MARK: Replies

    /// The reply to a request that failed or was refused.
    public func errorReply(to request: NBDRequest, error: UInt32, message: String) -> ByteBuffer {
        var b = ByteBuffer()
        if session.structuredReplies {
            NBDWire.errorChunk(cookie: request.cookie, error: error, message: message, into: &b)
        } else {
            NBDWire.simpleReply(cookie: request.cookie, error: error, into: &b)
        }
        return b
    }

    /// The reply to a successful command without data (WRITE, FLUSH, TRIM, WRITE_ZEROES).
    public func successReply(to request: NBDRequest) -> ByteBuffer {
        var b = ByteBuffer()
        NBDWire.simpleReply(cookie: request.cookie, error: 0, into: &b)
        return b
    }

    /// How many bytes precede the data of a READ reply.
    public var readHeaderSize: Int { session.structuredReplies ? 28 : 16 }

    /// Writes the header of a successful READ reply of `request.length` bytes (the data follows).
    public func readReplyHeader(to request: NBDRequest, into b: inout ByteBuffer) {
        if session.structuredReplies {
            NBDWire.offsetDataHeader(cookie: request.cookie, offset: request.offset, dataLength: Int(request.length), into: &b)
        } else {
            NBDWire.simpleReply(cookie: request.cookie, error: 0, into: &b)
        }
    }

    /// The reply to a successful BLOCK_STATUS: the extents cut to the requested length (one if REQ_ONE).
    public func blockStatusReply(to request: NBDRequest, extents: [NBDExtent]) -> ByteBuffer {
        var chosen: [NBDExtent] = []
        var remaining = UInt64(request.length)
        for e in extents where remaining > 0 && e.length > 0 {
            let length = UInt32(min(UInt64(e.length), remaining))
            if let last = chosen.last, last.flags == e.flags, UInt64(last.length) + UInt64(length) <= UInt64(UInt32.max) {
                chosen[chosen.count - 1].length += length
            } else {
                chosen.append(NBDExtent(length: length, flags: e.flags))
            }
            remaining -= UInt64(length)
        }
        if request.flags & NBD.CommandFlags.requestOne != 0 { chosen = Array(chosen.prefix(1)) }
        var b = ByteBuffer()
        NBDWire.blockStatus(cookie: request.cookie, context: session.allocationContext ?? NBD.baseAllocationID, extents: chosen, into: &b)
        return b
    }
}
