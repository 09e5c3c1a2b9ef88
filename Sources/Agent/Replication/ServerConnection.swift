import LifeboatCore
import NIOCore
import NIOPosix
import NIOSSL
import ReplicationProtocol
import ReplicationTransport

/// Opens a TLS connection to the replication server and wraps it as a stream of `Message`s.
enum ServerConnection {
    static func open(
        _ address: ServerAddress,
        context: NIOSSLContext,
        verifier: PinnedAuthorityVerifier? = nil,
        idleTimeout: TimeAmount = .hours(1)
    ) async throws -> NIOAsyncChannel<Message, Message> {
        let hostname: String? = address.isIPAddress ? nil : address.host
        do {
            return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(10))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .connect(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addIdleClose(after: idleTimeout)
                        let tls: NIOSSLClientHandler
                        if let verifier {
                            tls = try verifier.makeClientHandler(context: context, serverHostname: hostname)
                        } else {
                            tls = try NIOSSLClientHandler(context: context, serverHostname: hostname)
                        }
                        try sync.addHandler(tls)
                        try sync.addFrameCodec()
                        return try NIOAsyncChannel<Message, Message>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            if let failure = verifier?.failure { throw failure }
            throw LifeboatError(
                "agent.connect",
                "cannot connect to the replication server at \(address): is it running and reachable on that port?",
                cause: error
            )
        }
    }
}
