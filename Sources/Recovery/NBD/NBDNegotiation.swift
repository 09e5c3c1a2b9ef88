public import NIOCore

/// What a connection agreed on when it enters transmission.
public struct NBDSession: Sendable, Equatable {
    public var export: NBDExportInfo
    /// READ and BLOCK_STATUS are answered with structured reply chunks.
    public var structuredReplies: Bool
    /// The id of `base:allocation` when the client selected it for this export (BLOCK_STATUS allowed).
    public var allocationContext: UInt32?

    public init(export: NBDExportInfo, structuredReplies: Bool, allocationContext: UInt32?) {
        self.export = export
        self.structuredReplies = structuredReplies
        self.allocationContext = allocationContext
    }
}

/// The fixed-newstyle handshake and option haggling as a pure state machine: bytes in, an action out, no I/O.
///
/// The connection sends `NBDWire.greeting()`, then feeds every received byte to `receive(_:exports:)` and
/// performs the returned actions until `.needMoreData`. When TLS is mandatory, every option but STARTTLS and
/// ABORT is refused with `NBD_REP_ERR_TLS_REQD` until the connection is encrypted.
public struct NBDNegotiation: Sendable {
    public enum State: Sendable, Equatable {
        case awaitingClientFlags
        case options
        case transmission
        case closed
    }

    /// Why a connection ends during negotiation.
    public enum CloseReason: Sendable, Equatable {
        /// The client sent `NBD_OPT_ABORT`.
        case aborted
        /// The client broke the protocol; the text says how (for the log).
        case protocolError(String)
    }

    public enum Action: Sendable, Equatable {
        /// Wait for more bytes.
        case needMoreData
        /// Send these bytes and call `receive` again.
        case send(ByteBuffer)
        /// Send this (plain) acknowledgement, then put TLS in front of the connection; what follows is encrypted.
        case startTLS(ByteBuffer)
        /// Send these bytes; every byte after them is transmission.
        case enterTransmission(ByteBuffer, NBDSession)
        /// Send the bytes if any, then close.
        case close(ByteBuffer?, CloseReason)
    }

    public private(set) var state: State = .awaitingClientFlags
    /// TLS is offered (the server has a certificate).
    public let tlsAvailable: Bool
    /// Options other than STARTTLS and ABORT are refused until TLS is on.
    public let tlsRequired: Bool
    public private(set) var tlsActive = false
    public private(set) var noZeroes = false
    public private(set) var structuredReplies = false
    /// The export for which the client selected `base:allocation`, if it did.
    public private(set) var allocationContextExport: String?

    public init(tlsAvailable: Bool, tlsRequired: Bool) {
        precondition(tlsAvailable || !tlsRequired, "TLS cannot be required without being available")
        self.tlsAvailable = tlsAvailable
        self.tlsRequired = tlsRequired
    }

    /// Consumes at most one message from `buffer` and says what to do.
    public mutating func receive(_ buffer: inout ByteBuffer, exports: [String: NBDExportInfo]) -> Action {
        switch state {
        case .awaitingClientFlags:
            guard let flags: UInt32 = buffer.readInteger() else { return .needMoreData }
            guard flags & ~NBD.ClientFlags.known == 0 else {
                return fail("unknown client flags 0x\(String(flags, radix: 16))")
            }
            guard flags & NBD.ClientFlags.fixedNewstyle != 0 else {
                return fail("the client does not speak fixed newstyle")
            }
            noZeroes = flags & NBD.ClientFlags.noZeroes != 0
            state = .options
            return receive(&buffer, exports: exports)
        case .options:
            let request: NBDOptionRequest
            do {
                guard let r = try NBDWire.decodeOption(from: &buffer) else { return .needMoreData }
                request = r
            } catch {
                return fail(error.description)
            }
            return handle(request, remaining: buffer.readableBytes, exports: exports)
        case .transmission, .closed:
            return .needMoreData
        }
    }

    private mutating func fail(_ reason: String) -> Action {
        state = .closed
        return .close(nil, .protocolError(reason))
    }

    private mutating func handle(_ request: NBDOptionRequest, remaining: Int, exports: [String: NBDExportInfo]) -> Action {
        let option = request.option
        var out = ByteBuffer()
        func error(_ type: UInt32, _ message: String) -> Action {
            NBDWire.optionError(option, type, message, into: &out)
            return .send(out)
        }

        if option == NBD.Option.abort {
            NBDWire.optionReply(option, NBD.Reply.ack, into: &out)
            state = .closed
            return .close(out, .aborted)
        }
        if option == NBD.Option.startTLS {
            guard tlsAvailable else { return error(NBD.Reply.errorUnsupported, "this server has no TLS certificate") }
            guard !tlsActive else { return error(NBD.Reply.errorInvalid, "TLS is already on") }
            guard request.data.readableBytes == 0 else { return error(NBD.Reply.errorInvalid, "STARTTLS takes no data") }
            guard remaining == 0 else {
                return fail("the client sent data after STARTTLS before the server's reply")
            }
            tlsActive = true
            NBDWire.optionReply(option, NBD.Reply.ack, into: &out)
            return .startTLS(out)
        }
        if tlsRequired && !tlsActive {
            if option == NBD.Option.exportName {
                // EXPORT_NAME has no error reply: all the server can do is hang up.
                return fail("EXPORT_NAME before STARTTLS on a server that requires TLS")
            }
            return error(NBD.Reply.errorTLSRequired, "this server requires TLS: use STARTTLS")
        }

        switch option {
        case NBD.Option.exportName:
            let name = request.data.getString(at: request.data.readerIndex, length: request.data.readableBytes) ?? ""
            guard let export = exports[name] else { return fail("EXPORT_NAME of unknown export '\(name)'") }
            NBDWire.exportNameReply(export, noZeroes: noZeroes, into: &out)
            state = .transmission
            return .enterTransmission(out, session(for: export))

        case NBD.Option.list:
            guard request.data.readableBytes == 0 else { return error(NBD.Reply.errorInvalid, "LIST takes no data") }
            for export in exports.values.sorted(by: { $0.name < $1.name }) { NBDWire.server(export, into: &out) }
            NBDWire.optionReply(option, NBD.Reply.ack, into: &out)
            return .send(out)

        case NBD.Option.info, NBD.Option.go:
            var data = request.data
            guard let nameLength: UInt32 = data.readInteger(), data.readableBytes >= Int(nameLength),
                let name = data.readString(length: Int(nameLength)),
                let count: UInt16 = data.readInteger(), data.readableBytes == 2 * Int(count)
            else { return error(NBD.Reply.errorInvalid, "malformed \(option == NBD.Option.go ? "GO" : "INFO") request") }
            var requested: [UInt16] = []
            for _ in 0..<count { requested.append(data.readInteger()!) }
            guard let export = exports[name] else { return error(NBD.Reply.errorUnknown, "no export named '\(name)'") }
            NBDWire.infoExport(option, export, into: &out)
            if requested.contains(NBD.Info.name) { NBDWire.infoName(option, export.name, into: &out) }
            if requested.contains(NBD.Info.description), !export.description.isEmpty {
                NBDWire.infoDescription(option, export.description, into: &out)
            }
            // A client that asks for block sizes honours them, so it may send unaligned requests (minimum 1);
            // one that does not ask is told nothing and uses 512-byte-aligned requests, which work too.
            if requested.contains(NBD.Info.blockSize) { NBDWire.infoBlockSize(option, minimum: 1, into: &out) }
            NBDWire.optionReply(option, NBD.Reply.ack, into: &out)
            guard option == NBD.Option.go else { return .send(out) }
            state = .transmission
            return .enterTransmission(out, session(for: export))

        case NBD.Option.structuredReply:
            guard request.data.readableBytes == 0 else {
                return error(NBD.Reply.errorInvalid, "STRUCTURED_REPLY takes no data")
            }
            guard !structuredReplies else { return error(NBD.Reply.errorInvalid, "structured replies are already on") }
            structuredReplies = true
            NBDWire.optionReply(option, NBD.Reply.ack, into: &out)
            return .send(out)

        case NBD.Option.listMetaContext, NBD.Option.setMetaContext:
            let isSet = option == NBD.Option.setMetaContext
            guard !isSet || structuredReplies else {
                return error(NBD.Reply.errorInvalid, "SET_META_CONTEXT needs structured replies first")
            }
            guard let (name, queries) = Self.parseMetaContext(request.data) else {
                return error(NBD.Reply.errorInvalid, "malformed meta context request")
            }
            guard exports[name] != nil else { return error(NBD.Reply.errorUnknown, "no export named '\(name)'") }
            let matches: Bool
            if isSet {
                matches = queries.contains(NBD.baseAllocation)
                allocationContextExport = matches ? name : nil
            } else {
                matches = queries.isEmpty || queries.contains { $0 == NBD.baseAllocation || $0 == "base:" }
            }
            if matches {
                NBDWire.metaContext(option, id: NBD.baseAllocationID, name: NBD.baseAllocation, into: &out)
            }
            NBDWire.optionReply(option, NBD.Reply.ack, into: &out)
            return .send(out)

        default:
            return error(NBD.Reply.errorUnsupported, "option \(option) is not supported")
        }
    }

    private func session(for export: NBDExportInfo) -> NBDSession {
        NBDSession(
            export: export,
            structuredReplies: structuredReplies,
            allocationContext: structuredReplies && allocationContextExport == export.name ? NBD.baseAllocationID : nil
        )
    }

    /// `u32 len, export name, u32 n, {u32 len, query}*`, nothing more.
    static func parseMetaContext(_ buffer: ByteBuffer) -> (String, [String])? {
        var data = buffer
        guard let nameLength: UInt32 = data.readInteger(), data.readableBytes >= Int(nameLength),
            let name = data.readString(length: Int(nameLength)),
            let count: UInt32 = data.readInteger()
        else { return nil }
        var queries: [String] = []
        for _ in 0..<count {
            guard let length: UInt32 = data.readInteger(), data.readableBytes >= Int(length),
                let query = data.readString(length: Int(length))
            else { return nil }
            queries.append(query)
        }
        return data.readableBytes == 0 ? (name, queries) : nil
    }
}
