import LifeboatTesting
import NIOCore
import Recovery
import Testing

@Suite("NBD transmission codec (no sockets)")
struct NBDCodecTests {
    static let ro = NBDExportInfo(name: "disk", size: 1 << 20, isReadOnly: true)
    static let rw = NBDExportInfo(name: "rw", size: 1 << 20, isReadOnly: false)

    func transmission(_ export: NBDExportInfo = rw, structured: Bool = true, context: Bool = true) -> NBDTransmission {
        NBDTransmission(
            session: NBDSession(export: export, structuredReplies: structured, allocationContext: context ? 1 : nil)
        )
    }

    func encoded(_ r: NBDRequest, payload: [UInt8]? = nil) -> ByteBuffer {
        var b = ByteBuffer()
        NBDWire.encode(r, payload: payload.map { ByteBuffer(bytes: $0) }, into: &b)
        return b
    }

    @Test("a request round-trips; a WRITE waits for its whole payload")
    func requestRoundTrip() {
        let r = NBDRequest(flags: NBD.CommandFlags.fua, type: NBD.Command.write, cookie: 0xDEAD_BEEF_0000_0001, offset: 4096, length: 5)
        var t = transmission()
        let full = encoded(r, payload: [1, 2, 3, 4, 5])
        #expect(full.readableBytes == 33)
        var part = full.getSlice(at: 0, length: 30)!
        #expect(t.next(from: &part) == .needMoreData)
        #expect(part.readableBytes == 30, "nothing consumed until the payload is complete")
        var whole = full
        #expect(t.next(from: &whole) == .request(r, payload: ByteBuffer(bytes: [1, 2, 3, 4, 5])))
        #expect(whole.readableBytes == 0)
        #expect((try? NBDWire.peekRequest(in: encoded(r))) == r)
    }

    @Test("bad request magic is a protocol error")
    func badMagic() {
        var t = transmission()
        var b = ByteBuffer(repeating: 0x41, count: 28)
        guard case .protocolError = t.next(from: &b) else {
            Issue.record("garbage should be a protocol error")
            return
        }
    }

    @Test("refusals: EPERM on read-only, EINVAL beyond the end or unknown, EOVERFLOW above the maximum payload")
    func refusals() {
        let cases: [(NBDExportInfo, NBDRequest, UInt32)] = [
            (Self.ro, NBDRequest(type: NBD.Command.writeZeroes, cookie: 1, offset: 0, length: 4096), NBD.ReplyError.permission),
            (Self.ro, NBDRequest(type: NBD.Command.trim, cookie: 2, offset: 0, length: 4096), NBD.ReplyError.permission),
            (Self.rw, NBDRequest(type: NBD.Command.read, cookie: 3, offset: (1 << 20) - 1, length: 2), NBD.ReplyError.invalid),
            (Self.rw, NBDRequest(type: NBD.Command.read, cookie: 4, offset: UInt64.max, length: 2), NBD.ReplyError.invalid),
            (Self.rw, NBDRequest(type: NBD.Command.read, cookie: 5, offset: 0, length: UInt32(NBD.maxPayload) + 1), NBD.ReplyError.overflow),
            (Self.rw, NBDRequest(type: NBD.Command.read, cookie: 6, offset: 0, length: 0), NBD.ReplyError.invalid),
            (Self.rw, NBDRequest(type: NBD.Command.cache, cookie: 7, offset: 0, length: 1), NBD.ReplyError.invalid),
            (Self.rw, NBDRequest(type: 99, cookie: 8, offset: 0, length: 1), NBD.ReplyError.invalid),
        ]
        for (export, request, error) in cases {
            var t = transmission(export)
            var b = encoded(request)
            guard case .refuse(let r, let e, _) = t.next(from: &b) else {
                Issue.record("\(request) should be refused")
                continue
            }
            #expect(r == request)
            #expect(e == error, "\(request)")
        }
        var noContext = transmission(context: false)
        var bs = encoded(NBDRequest(type: NBD.Command.blockStatus, cookie: 9, offset: 0, length: 512))
        guard case .refuse(_, NBD.ReplyError.invalid, _) = noContext.next(from: &bs) else {
            Issue.record("BLOCK_STATUS without a context should be refused")
            return
        }
    }

    @Test("a refused WRITE's payload is skipped, even across buffers, and the next request parses")
    func refusedWriteSkipsPayload() {
        var t = transmission(Self.ro)
        let write = NBDRequest(type: NBD.Command.write, cookie: 1, offset: 0, length: 10_000)
        let stream = encoded(write, payload: [UInt8](repeating: 7, count: 10_000))
        var first = stream.getSlice(at: 0, length: 5000)!
        guard case .refuse(_, NBD.ReplyError.permission, _) = t.next(from: &first) else {
            Issue.record("write to a read-only export should be refused")
            return
        }
        var rest = stream.getSlice(at: 5000, length: stream.readableBytes - 5000)!
        let read = NBDRequest(type: NBD.Command.read, cookie: 2, offset: 0, length: 512)
        rest.writeImmutableBuffer(encoded(read))
        #expect(t.next(from: &rest) == .request(read, payload: nil))
        #expect(rest.readableBytes == 0)
    }

    @Test("reply encodings: simple, OFFSET_DATA header, ERROR chunk, BLOCK_STATUS cut to the request and REQ_ONE")
    func replies() {
        let simple = transmission(structured: false)
        let r = NBDRequest(type: NBD.Command.read, cookie: 42, offset: 8192, length: 100)
        var s = ByteBuffer()
        simple.readReplyHeader(to: r, into: &s)
        #expect(s.readInteger(as: UInt32.self) == NBD.simpleReplyMagic)
        #expect(s.readInteger(as: UInt32.self) == 0)
        #expect(s.readInteger(as: UInt64.self) == 42)
        #expect(simple.readHeaderSize == 16)

        let structured = transmission()
        var h = ByteBuffer()
        structured.readReplyHeader(to: r, into: &h)
        #expect(h.readableBytes == structured.readHeaderSize)
        #expect(h.readInteger(as: UInt32.self) == NBD.structuredReplyMagic)
        #expect(h.readInteger(as: UInt16.self) == NBD.Chunk.flagDone)
        #expect(h.readInteger(as: UInt16.self) == NBD.Chunk.offsetData)
        #expect(h.readInteger(as: UInt64.self) == 42)
        #expect(h.readInteger(as: UInt32.self) == 108)
        #expect(h.readInteger(as: UInt64.self) == 8192)

        var e = structured.errorReply(to: r, error: NBD.ReplyError.io, message: "boom")
        #expect(e.readInteger(as: UInt32.self) == NBD.structuredReplyMagic)
        #expect(e.readInteger(as: UInt16.self) == NBD.Chunk.flagDone)
        #expect(e.readInteger(as: UInt16.self) == NBD.Chunk.error)
        #expect(e.readInteger(as: UInt64.self) == 42)
        #expect(e.readInteger(as: UInt32.self) == 10)
        #expect(e.readInteger(as: UInt32.self) == NBD.ReplyError.io)
        #expect(e.readInteger(as: UInt16.self) == 4)
        #expect(e.readString(length: 4) == "boom")

        let extents = [NBDExtent(length: 4096, flags: 0), NBDExtent(length: 4096, flags: 0), NBDExtent(length: 65536, flags: 3)]
        let bsRequest = NBDRequest(type: NBD.Command.blockStatus, cookie: 7, offset: 0, length: 10_000)
        var bs = structured.blockStatusReply(to: bsRequest, extents: extents)
        bs.moveReaderIndex(forwardBy: 16)
        #expect(bs.readInteger(as: UInt32.self) == 20)
        #expect(bs.readInteger(as: UInt32.self) == 1)
        #expect(bs.readInteger(as: UInt32.self) == 8192)
        #expect(bs.readInteger(as: UInt32.self) == 0)
        #expect(bs.readInteger(as: UInt32.self) == 1808)
        #expect(bs.readInteger(as: UInt32.self) == 3)
        var one = bsRequest
        one.flags = NBD.CommandFlags.requestOne
        var single = structured.blockStatusReply(to: one, extents: extents)
        single.moveReaderIndex(forwardBy: 16)
        #expect(single.readInteger(as: UInt32.self) == 12)
    }

    @Test("random and mutated handshake and transmission bytes never crash the state machines")
    func fuzz() {
        var rng = SeededRandom(seed: 2026)
        let exports = ["disk": Self.ro]
        var valid = Client.flags()
        valid.writeImmutableBuffer(Client.option(NBD.Option.structuredReply))
        valid.writeImmutableBuffer(Client.option(NBD.Option.setMetaContext, Client.metaData("disk", ["base:allocation"])))
        valid.writeImmutableBuffer(Client.option(NBD.Option.info, Client.infoData("disk", [3, 1])))
        valid.writeImmutableBuffer(Client.option(NBD.Option.list))
        valid.writeImmutableBuffer(Client.option(NBD.Option.go, Client.infoData("disk", [3])))
        for r in [
            NBDRequest(type: NBD.Command.read, cookie: 1, offset: 0, length: 4096),
            NBDRequest(type: NBD.Command.write, cookie: 2, offset: 0, length: 16),
            NBDRequest(type: NBD.Command.blockStatus, cookie: 3, offset: 0, length: 1 << 20),
        ] {
            NBDWire.encode(r, payload: r.type == NBD.Command.write ? ByteBuffer(repeating: 1, count: 16) : nil, into: &valid)
        }
        let validBytes = Array(valid.readableBytesView)
        for iteration in 0..<3000 {
            var bytes: [UInt8]
            if iteration % 3 == 0 {
                bytes = rng.bytes(rng.below(400))
            } else {
                bytes = validBytes
                for _ in 0..<(1 + rng.below(6)) {
                    let at = rng.below(bytes.count)
                    switch rng.below(3) {
                    case 0: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                    case 1: bytes.removeSubrange(at..<min(bytes.count, at + rng.below(8) + 1))
                    default: bytes.insert(contentsOf: rng.bytes(rng.below(8) + 1), at: at)
                    }
                    if bytes.isEmpty { break }
                }
            }
            var n = NBDNegotiation(tlsAvailable: iteration % 2 == 0, tlsRequired: false)
            // Feed in random pieces.
            var pending = ByteBuffer()
            var offset = 0
            var transmission: NBDTransmission? = nil
            var steps = 0
            outer: while offset < bytes.count {
                let piece = min(bytes.count - offset, 1 + rng.below(64))
                pending.writeBytes(bytes[offset..<(offset + piece)])
                offset += piece
                while steps < 10_000 {
                    steps += 1
                    if var t = transmission {
                        let event = t.next(from: &pending)
                        transmission = t
                        if event == .needMoreData { break }
                        if case .protocolError = event { break outer }
                        continue
                    }
                    switch n.receive(&pending, exports: exports) {
                    case .needMoreData: break
                    case .send, .startTLS: continue
                    case .enterTransmission(_, let session):
                        transmission = NBDTransmission(session: session)
                        continue
                    case .close: break outer
                    }
                    break
                }
            }
            #expect(steps < 10_000)
        }
    }
}
