import LifeboatCore
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// What every connection of a server shares.
struct ConnectionSettings: Sendable {
    let registry: ExportRegistry
    let pool: NIOThreadPool
    let tls: NIOSSLContext?
    /// Pinned client certificates (DER); empty: none required.
    let allowedClientCertificates: Set<[UInt8]>
    let maxInFlight: Int
    let logger: Logger
}

/// One client connection: drives `NBDNegotiation`, then `NBDTransmission`, running each request on the thread
/// pool so that several are in flight; replies go out as requests complete, matched by cookie. Anything that
/// is not NBD closes this connection only.
final class NBDConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        case negotiating(NBDNegotiation)
        case transmitting(NBDTransmission, any NBDExport)
        case closed
    }

    private let settings: ConnectionSettings
    private var logger: Logger
    private var phase: Phase
    private var buffer = ByteBuffer()
    private var inFlight = 0
    private var readingPaused = false
    private var disconnecting = false
    private var context: ChannelHandlerContext?

    init(settings: ConnectionSettings) {
        self.settings = settings
        self.logger = settings.logger
        let tls = settings.tls != nil
        phase = .negotiating(NBDNegotiation(tlsAvailable: tls, tlsRequired: tls))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        logger[metadataKey: "client"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        logger.debug("NBD client connected")
        context.writeAndFlush(wrapOutboundOut(NBDWire.greeting()), promise: nil)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        logger.debug("NBD client disconnected")
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        process(context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let tls = error as? NIOSSLError, case .uncleanShutdown = tls {
            // Clients (libnbd among them) often hang up without a TLS close_notify: nothing was lost.
            logger.debug("NBD client closed TLS without close_notify")
        } else {
            logger.warning("NBD connection failed", metadata: ["error": "\(error)"])
        }
        close(context: context)
    }

    private func close(context: ChannelHandlerContext) {
        phase = .closed
        context.close(promise: nil)
    }

    private func send(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
    }

    /// Handles every complete message in `buffer`.
    private func process(context: ChannelHandlerContext) {
        defer {
            if buffer.readerIndex > 1 << 20 || buffer.readableBytes == 0 { buffer.discardReadBytes() }
        }
        while true {
            switch phase {
            case .closed:
                return
            case .negotiating(var negotiation):
                let action = negotiation.receive(&buffer, exports: settings.registry.snapshot())
                phase = .negotiating(negotiation)
                switch action {
                case .needMoreData:
                    return
                case .send(let reply):
                    send(reply, context: context)
                case .startTLS(let reply):
                    send(reply, context: context)
                    guard let tls = settings.tls else { return close(context: context) }
                    do {
                        let handler: NIOSSLServerHandler
                        if settings.allowedClientCertificates.isEmpty {
                            handler = NIOSSLServerHandler(context: tls)
                        } else {
                            // Only the pinned certificates: a certificate merely signed by the same CA (an agent's)
                            // does not open recovered disks.
                            let allowed = settings.allowedClientCertificates
                            let logger = settings.logger
                            handler = NIOSSLServerHandler(context: tls) { certificates, promise in
                                let leaf = certificates.first.flatMap { try? $0.toDERBytes() }
                                if let leaf, allowed.contains(leaf) {
                                    promise.succeed(.certificateVerified)
                                } else {
                                    logger.warning("NBD client refused: its TLS certificate is not the server's NBD client certificate")
                                    promise.succeed(.failed)
                                }
                            }
                        }
                        try context.pipeline.syncOperations.addHandler(handler, position: .first)
                    } catch {
                        logger.error("cannot start TLS", metadata: ["error": "\(error)"])
                        return close(context: context)
                    }
                case .enterTransmission(let reply, let session):
                    guard let export = settings.registry.export(named: session.export.name) else {
                        logger.warning("export went away during negotiation", metadata: ["export": "\(session.export.name)"])
                        return close(context: context)
                    }
                    send(reply, context: context)
                    logger[metadataKey: "export"] = "\(session.export.name)"
                    logger.debug("NBD transmission", metadata: ["structured": "\(session.structuredReplies)"])
                    phase = .transmitting(NBDTransmission(session: session), export)
                case .close(let reply, let reason):
                    if let reply { send(reply, context: context) }
                    if case .protocolError(let text) = reason {
                        logger.error("NBD client broke the protocol during negotiation", metadata: ["reason": "\(text)"])
                    }
                    return close(context: context)
                }
            case .transmitting(var transmission, let export):
                if disconnecting { return }
                if inFlight >= settings.maxInFlight {
                    pauseReading(context: context)
                    return
                }
                let event = transmission.next(from: &buffer)
                phase = .transmitting(transmission, export)
                switch event {
                case .needMoreData:
                    return
                case .refuse(let request, let error, let message):
                    logger.debug("NBD request refused", metadata: ["reason": "\(message)"])
                    send(transmission.errorReply(to: request, error: error, message: message), context: context)
                case .protocolError(let text):
                    logger.error("NBD client sent malformed data", metadata: ["reason": "\(text)"])
                    return close(context: context)
                case .request(let request, let payload):
                    if request.type == NBD.Command.disconnect {
                        disconnecting = true
                        if inFlight == 0 { close(context: context) }
                        return
                    }
                    dispatch(request, payload: payload, transmission: transmission, export: export, context: context)
                }
            }
        }
    }

    private func dispatch(
        _ request: NBDRequest,
        payload: ByteBuffer?,
        transmission: NBDTransmission,
        export: any NBDExport,
        context: ChannelHandlerContext
    ) {
        inFlight += 1
        let logger = self.logger
        let future = settings.pool.runIfActive(eventLoop: context.eventLoop) {
            Self.perform(request, payload: payload, transmission: transmission, export: export, logger: logger)
        }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        future.whenComplete { result in
            let reply: ByteBuffer
            switch result {
            case .success(let r): reply = r
            case .failure:
                reply = transmission.errorReply(to: request, error: NBD.ReplyError.shutdown, message: "the server is stopping")
            }
            bound.value.completed(reply)
        }
    }

    private func completed(_ reply: ByteBuffer) {
        inFlight -= 1
        guard let context, case .transmitting = phase else { return }
        send(reply, context: context)
        if disconnecting {
            if inFlight == 0 { close(context: context) }
            return
        }
        if readingPaused && inFlight < settings.maxInFlight {
            readingPaused = false
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            context.read()
            process(context: context)
        }
    }

    private func pauseReading(context: ChannelHandlerContext) {
        guard !readingPaused else { return }
        readingPaused = true
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
    }

    // MARK: On the thread pool

    /// Runs one request against the export and returns the complete reply; never throws.
    static func perform(
        _ request: NBDRequest,
        payload: ByteBuffer?,
        transmission: NBDTransmission,
        export: any NBDExport,
        logger: Logger
    ) -> ByteBuffer {
        let offset = Int64(request.offset)
        let length = Int(request.length)
        do {
            switch request.type {
            case NBD.Command.read:
                var reply = ByteBufferAllocator().buffer(capacity: transmission.readHeaderSize + length)
                transmission.readReplyHeader(to: request, into: &reply)
                try reply.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { space in
                    try export.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: space[0..<length]))
                    return length
                }
                return reply
            case NBD.Command.write:
                guard let payload else { throw LifeboatError("nbd.internal", "a WRITE without payload") }
                try payload.withUnsafeReadableBytes { try export.write(at: offset, from: $0) }
                if request.flags & NBD.CommandFlags.fua != 0 { try export.flush() }
            case NBD.Command.writeZeroes:
                try export.writeZeroes(at: offset, length: Int64(length))
                if request.flags & NBD.CommandFlags.fua != 0 { try export.flush() }
            case NBD.Command.trim:
                try export.trim(at: offset, length: Int64(length))
            case NBD.Command.flush:
                try export.flush()
            case NBD.Command.blockStatus:
                let extents = try export.blockStatus(at: offset, length: Int64(length))
                guard !extents.isEmpty else { throw LifeboatError("nbd.internal", "no extents for \(length) bytes at \(offset)") }
                return transmission.blockStatusReply(to: request, extents: extents)
            default:
                throw LifeboatError("nbd.internal", "command \(request.type) reached the export")
            }
            return transmission.successReply(to: request)
        } catch {
            let code = nbdError(for: error)
            if code == NBD.ReplyError.io {
                let detail = (error as? LifeboatError)?.detailedDescription() ?? "\(error)"
                logger.error("NBD request failed", metadata: ["type": "\(request.type)", "offset": "\(offset)", "error": "\(detail)"])
            }
            return transmission.errorReply(to: request, error: code, message: "\(error)")
        }
    }

    /// The NBD error for a failure of an export.
    static func nbdError(for error: any Error) -> UInt32 {
        switch error {
        case "nbd.read-only": return NBD.ReplyError.permission
        case "io.no-space": return NBD.ReplyError.noSpace
        case "store.beyond-end": return NBD.ReplyError.invalid
        default: return NBD.ReplyError.io
        }
    }
}
