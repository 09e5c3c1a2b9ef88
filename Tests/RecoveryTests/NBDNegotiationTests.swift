import NIOCore
import Recovery
import Testing

@Suite("NBD negotiation state machine (no sockets)")
struct NBDNegotiationTests {
    static let disk = NBDExportInfo(name: "disk", size: 1 << 20, isReadOnly: true)
    static let rw = NBDExportInfo(name: "rw", size: 8192, isReadOnly: false)
    static let exports = ["disk": disk, "rw": rw]

    /// A machine past the client flags.
    func negotiating(tls: Bool = false, flags: UInt32 = NBD.ClientFlags.fixedNewstyle | NBD.ClientFlags.noZeroes)
        -> NBDNegotiation
    {
        var n = NBDNegotiation(tlsAvailable: tls, tlsRequired: tls)
        var b = Client.flags(flags)
        #expect(n.receive(&b, exports: Self.exports) == .needMoreData)
        #expect(n.state == .options)
        return n
    }

    /// Sends one option and returns the replies it produced (for `.send`).
    func replies(_ n: inout NBDNegotiation, _ option: UInt32, _ data: ByteBuffer = ByteBuffer()) -> [OptionReply] {
        var b = Client.option(option, data)
        guard case .send(let out) = n.receive(&b, exports: Self.exports) else {
            Issue.record("option \(option) did not produce a reply to send")
            return []
        }
        #expect(b.readableBytes == 0)
        return OptionReply.all(in: out)
    }

    @Test("the greeting is NBDMAGIC, IHAVEOPT, fixed newstyle + no zeroes")
    func greeting() {
        var g = NBDWire.greeting()
        #expect(g.readInteger(as: UInt64.self) == 0x4E42_444D_4147_4943)
        #expect(g.readInteger(as: UInt64.self) == 0x4948_4156_454F_5054)
        #expect(g.readInteger(as: UInt16.self) == 3)
        #expect(g.readableBytes == 0)
    }

    @Test("client flags arriving a byte at a time, unknown flags and plain newstyle")
    func clientFlags() {
        var n = NBDNegotiation(tlsAvailable: false, tlsRequired: false)
        var b = ByteBuffer(bytes: [0, 0, 0])
        #expect(n.receive(&b, exports: Self.exports) == .needMoreData)
        b.writeInteger(UInt8(1))
        #expect(n.receive(&b, exports: Self.exports) == .needMoreData)
        #expect(n.state == .options)
        #expect(!n.noZeroes)

        for bad: UInt32 in [0, 4, 0x8000_0001] {
            var m = NBDNegotiation(tlsAvailable: false, tlsRequired: false)
            var f = Client.flags(bad)
            guard case .close(nil, .protocolError) = m.receive(&f, exports: Self.exports) else {
                Issue.record("flags \(bad) should close")
                continue
            }
            #expect(m.state == .closed)
        }
    }

    @Test("bad option magic and an oversized option close the connection")
    func badOptionFraming() {
        var n = negotiating()
        var b = ByteBuffer()
        b.writeInteger(UInt64(0x1234))
        b.writeInteger(UInt32(NBD.Option.list))
        b.writeInteger(UInt32(0))
        guard case .close(nil, .protocolError) = n.receive(&b, exports: Self.exports) else {
            Issue.record("bad magic should close")
            return
        }
        var m = negotiating()
        var big = ByteBuffer()
        big.writeInteger(NBD.optionMagic)
        big.writeInteger(NBD.Option.go)
        big.writeInteger(UInt32(NBD.maxOptionLength + 1))
        guard case .close(nil, .protocolError) = m.receive(&big, exports: Self.exports) else {
            Issue.record("an oversized option should close")
            return
        }
        #expect(m.state == .closed)
    }

    @Test("a partial option waits for the rest")
    func partialOption() {
        var n = negotiating()
        let whole = Client.option(NBD.Option.list)
        var part = whole.getSlice(at: 0, length: 10)!
        #expect(n.receive(&part, exports: Self.exports) == .needMoreData)
        part.writeImmutableBuffer(whole.getSlice(at: 10, length: whole.readableBytes - 10)!)
        guard case .send = n.receive(&part, exports: Self.exports) else {
            Issue.record("complete option should be answered")
            return
        }
    }

    @Test("LIST names every export, then ACK; LIST with data is invalid")
    func list() {
        var n = negotiating()
        let r = replies(&n, NBD.Option.list)
        #expect(r.map(\.type) == [NBD.Reply.server, NBD.Reply.server, NBD.Reply.ack])
        var first = r[0].data
        let length: UInt32 = first.readInteger()!
        #expect(first.readString(length: Int(length)) == "disk")
        let bad = replies(&n, NBD.Option.list, ByteBuffer(bytes: [1]))
        #expect(bad.map(\.type) == [NBD.Reply.errorInvalid])
    }

    @Test("INFO answers EXPORT (+NAME, BLOCK_SIZE when asked) and ACK, staying in options")
    func info() {
        var n = negotiating()
        let r = replies(&n, NBD.Option.info, Client.infoData("disk", [NBD.Info.name, NBD.Info.blockSize]))
        #expect(r.map(\.type) == [NBD.Reply.info, NBD.Reply.info, NBD.Reply.info, NBD.Reply.ack])
        var export = r[0].data
        #expect(export.readInteger(as: UInt16.self) == NBD.Info.export)
        #expect(export.readInteger(as: UInt64.self) == 1 << 20)
        let flags: UInt16 = export.readInteger()!
        #expect(flags & NBD.TransmissionFlags.readOnly != 0)
        #expect(flags & NBD.TransmissionFlags.hasFlags != 0)
        var bs = r[2].data
        #expect(bs.readInteger(as: UInt16.self) == NBD.Info.blockSize)
        #expect(bs.readInteger(as: UInt32.self) == 1)
        #expect(bs.readInteger(as: UInt32.self) == 4096)
        #expect(bs.readInteger(as: UInt32.self) == 32 << 20)
        #expect(n.state == .options)

        let plain = replies(&n, NBD.Option.info, Client.infoData("rw"))
        #expect(plain.map(\.type) == [NBD.Reply.info, NBD.Reply.ack])
        var rwInfo = plain[0].data
        rwInfo.moveReaderIndex(forwardBy: 10)
        let rwFlags: UInt16 = rwInfo.readInteger()!
        #expect(rwFlags & NBD.TransmissionFlags.readOnly == 0)
        #expect(rwFlags & NBD.TransmissionFlags.sendFlush != 0)
        #expect(rwFlags & NBD.TransmissionFlags.sendWriteZeroes != 0)
    }

    @Test("INFO and GO of an unknown export: ERR_UNKNOWN; malformed: ERR_INVALID", arguments: [NBD.Option.info, NBD.Option.go])
    func unknownExport(option: UInt32) {
        var n = negotiating()
        #expect(replies(&n, option, Client.infoData("nope")).map(\.type) == [NBD.Reply.errorUnknown])
        var short = Client.infoData("disk")
        short.moveWriterIndex(to: short.writerIndex - 1)
        #expect(replies(&n, option, short).map(\.type) == [NBD.Reply.errorInvalid])
        var long = Client.infoData("disk")
        long.writeInteger(UInt8(0))
        #expect(replies(&n, option, long).map(\.type) == [NBD.Reply.errorInvalid])
        #expect(n.state == .options)
    }

    @Test("GO enters transmission with what was negotiated")
    func go() {
        var n = negotiating()
        #expect(replies(&n, NBD.Option.structuredReply).map(\.type) == [NBD.Reply.ack])
        let meta = replies(&n, NBD.Option.setMetaContext, Client.metaData("disk", ["base:allocation"]))
        #expect(meta.map(\.type) == [NBD.Reply.metaContext, NBD.Reply.ack])
        var b = Client.option(NBD.Option.go, Client.infoData("disk", [NBD.Info.blockSize]))
        guard case .enterTransmission(let out, let session) = n.receive(&b, exports: Self.exports) else {
            Issue.record("GO should enter transmission")
            return
        }
        #expect(OptionReply.all(in: out).map(\.type) == [NBD.Reply.info, NBD.Reply.info, NBD.Reply.ack])
        #expect(session == NBDSession(export: Self.disk, structuredReplies: true, allocationContext: NBD.baseAllocationID))
        #expect(n.state == .transmission)
        var more = Client.option(NBD.Option.list)
        #expect(n.receive(&more, exports: Self.exports) == .needMoreData, "bytes after GO are transmission")
    }

    @Test("a meta context chosen for another export does not carry over to GO")
    func metaContextForOtherExport() {
        var n = negotiating()
        _ = replies(&n, NBD.Option.structuredReply)
        _ = replies(&n, NBD.Option.setMetaContext, Client.metaData("rw", ["base:allocation"]))
        var b = Client.option(NBD.Option.go, Client.infoData("disk"))
        guard case .enterTransmission(_, let session) = n.receive(&b, exports: Self.exports) else {
            Issue.record("GO should enter transmission")
            return
        }
        #expect(session.allocationContext == nil)
        #expect(session.structuredReplies)
    }

    @Test("EXPORT_NAME: size and flags, 124 zeroes unless NO_ZEROES; unknown name closes")
    func exportName() {
        for noZeroes in [true, false] {
            var n = negotiating(flags: NBD.ClientFlags.fixedNewstyle | (noZeroes ? NBD.ClientFlags.noZeroes : 0))
            var b = Client.option(NBD.Option.exportName, ByteBuffer(string: "rw"))
            guard case .enterTransmission(var out, let session) = n.receive(&b, exports: Self.exports) else {
                Issue.record("EXPORT_NAME should enter transmission")
                continue
            }
            #expect(out.readableBytes == (noZeroes ? 10 : 134))
            #expect(out.readInteger(as: UInt64.self) == 8192)
            #expect(session.export == Self.rw)
            #expect(!session.structuredReplies)
        }
        var n = negotiating()
        var b = Client.option(NBD.Option.exportName, ByteBuffer(string: "nope"))
        guard case .close(nil, .protocolError) = n.receive(&b, exports: Self.exports) else {
            Issue.record("unknown EXPORT_NAME should close")
            return
        }
    }

    @Test("ABORT: ACK and close")
    func abort() {
        var n = negotiating()
        var b = Client.option(NBD.Option.abort)
        guard case .close(let out?, .aborted) = n.receive(&b, exports: Self.exports) else {
            Issue.record("ABORT should ACK and close")
            return
        }
        #expect(OptionReply.all(in: out).map(\.type) == [NBD.Reply.ack])
        #expect(n.state == .closed)
    }

    @Test("STRUCTURED_REPLY: ACK once, then invalid; with data invalid")
    func structured() {
        var n = negotiating()
        #expect(replies(&n, NBD.Option.structuredReply, ByteBuffer(bytes: [0])).map(\.type) == [NBD.Reply.errorInvalid])
        #expect(replies(&n, NBD.Option.structuredReply).map(\.type) == [NBD.Reply.ack])
        #expect(n.structuredReplies)
        #expect(replies(&n, NBD.Option.structuredReply).map(\.type) == [NBD.Reply.errorInvalid])
    }

    @Test("meta contexts: LIST offers base:allocation, SET needs structured replies, unknown queries select nothing")
    func metaContexts() {
        var n = negotiating()
        #expect(
            replies(&n, NBD.Option.setMetaContext, Client.metaData("disk", ["base:allocation"])).map(\.type)
                == [NBD.Reply.errorInvalid]
        )
        let listed = replies(&n, NBD.Option.listMetaContext, Client.metaData("disk", []))
        #expect(listed.map(\.type) == [NBD.Reply.metaContext, NBD.Reply.ack])
        var ctx = listed[0].data
        #expect(ctx.readInteger(as: UInt32.self) == NBD.baseAllocationID)
        #expect(ctx.readString(length: ctx.readableBytes) == "base:allocation")
        #expect(
            replies(&n, NBD.Option.listMetaContext, Client.metaData("disk", ["qemu:dirty-bitmap:x"])).map(\.type)
                == [NBD.Reply.ack]
        )
        _ = replies(&n, NBD.Option.structuredReply)
        #expect(
            replies(&n, NBD.Option.setMetaContext, Client.metaData("disk", ["qemu:allocation-depth"])).map(\.type)
                == [NBD.Reply.ack]
        )
        #expect(n.allocationContextExport == nil)
        #expect(
            replies(&n, NBD.Option.setMetaContext, Client.metaData("nope", ["base:allocation"])).map(\.type)
                == [NBD.Reply.errorUnknown]
        )
        var bad = Client.metaData("disk", ["base:allocation"])
        bad.writeInteger(UInt8(9))
        #expect(replies(&n, NBD.Option.setMetaContext, bad).map(\.type) == [NBD.Reply.errorInvalid])
        #expect(
            replies(&n, NBD.Option.setMetaContext, Client.metaData("disk", ["base:allocation"])).map(\.type)
                == [NBD.Reply.metaContext, NBD.Reply.ack]
        )
        #expect(n.allocationContextExport == "disk")
    }

    @Test(
        "unknown options get ERR_UNSUP (EXTENDED_HEADERS, PEEK_EXPORT, 0, 12, 0xffff)",
        arguments: [NBD.Option.extendedHeaders, NBD.Option.peekExport, 0, 12, 0xFFFF]
    )
    func unsupported(option: UInt32) {
        var n = negotiating()
        #expect(replies(&n, option).map(\.type) == [NBD.Reply.errorUnsupported])
        #expect(n.state == .options)
    }

    @Test("STARTTLS without a certificate: ERR_UNSUP")
    func startTLSUnavailable() {
        var n = negotiating()
        #expect(replies(&n, NBD.Option.startTLS).map(\.type) == [NBD.Reply.errorUnsupported])
    }

    static let allOptions: [UInt32] = [
        NBD.Option.list, NBD.Option.info, NBD.Option.go, NBD.Option.structuredReply,
        NBD.Option.listMetaContext, NBD.Option.setMetaContext, NBD.Option.extendedHeaders, NBD.Option.peekExport, 77,
    ]

    @Test("TLS required: every option but STARTTLS and ABORT gets ERR_TLS_REQD", arguments: allOptions)
    func tlsRequired(option: UInt32) {
        var n = negotiating(tls: true)
        let data: ByteBuffer =
            option == NBD.Option.info || option == NBD.Option.go
            ? Client.infoData("disk")
            : (option == NBD.Option.setMetaContext || option == NBD.Option.listMetaContext
                ? Client.metaData("disk", ["base:allocation"]) : ByteBuffer())
        #expect(replies(&n, option, data).map(\.type) == [NBD.Reply.errorTLSRequired])
        #expect(n.state == .options)
    }

    @Test("TLS required: EXPORT_NAME closes (it has no error reply); ABORT still works")
    func tlsRequiredExportName() {
        var n = negotiating(tls: true)
        var b = Client.option(NBD.Option.exportName, ByteBuffer(string: "disk"))
        guard case .close(nil, .protocolError) = n.receive(&b, exports: Self.exports) else {
            Issue.record("EXPORT_NAME before TLS should close")
            return
        }
        var m = negotiating(tls: true)
        var abort = Client.option(NBD.Option.abort)
        guard case .close(_?, .aborted) = m.receive(&abort, exports: Self.exports) else {
            Issue.record("ABORT should work before TLS")
            return
        }
    }

    @Test("STARTTLS: ACK and upgrade, then options are served; twice is invalid; data after it closes")
    func startTLS() {
        var n = negotiating(tls: true)
        var b = Client.option(NBD.Option.startTLS)
        guard case .startTLS(let ack) = n.receive(&b, exports: Self.exports) else {
            Issue.record("STARTTLS should upgrade")
            return
        }
        #expect(OptionReply.all(in: ack).map(\.type) == [NBD.Reply.ack])
        #expect(n.tlsActive)
        #expect(replies(&n, NBD.Option.startTLS).map(\.type) == [NBD.Reply.errorInvalid])
        #expect(replies(&n, NBD.Option.list).map(\.type) == [NBD.Reply.server, NBD.Reply.server, NBD.Reply.ack])

        var m = negotiating(tls: true)
        var pipelined = Client.option(NBD.Option.startTLS)
        pipelined.writeImmutableBuffer(Client.option(NBD.Option.list))
        guard case .close(nil, .protocolError) = m.receive(&pipelined, exports: Self.exports) else {
            Issue.record("plaintext after STARTTLS should close")
            return
        }
        var withData = negotiating(tls: true)
        #expect(replies(&withData, NBD.Option.startTLS, ByteBuffer(bytes: [1])).map(\.type) == [NBD.Reply.errorInvalid])
    }

    @Test("several options in one buffer are answered one by one")
    func pipelined() {
        var n = NBDNegotiation(tlsAvailable: false, tlsRequired: false)
        var b = Client.flags()
        b.writeImmutableBuffer(Client.option(NBD.Option.structuredReply))
        b.writeImmutableBuffer(Client.option(NBD.Option.setMetaContext, Client.metaData("disk", ["base:allocation"])))
        b.writeImmutableBuffer(Client.option(NBD.Option.go, Client.infoData("disk")))
        var types: [String] = []
        loop: while true {
            switch n.receive(&b, exports: Self.exports) {
            case .send: types.append("send")
            case .enterTransmission: types.append("go"); break loop
            default: types.append("other"); break loop
            }
        }
        #expect(types == ["send", "send", "go"])
        #expect(b.readableBytes == 0)
    }
}
