public import NIOCore

/// Closes a connection on which nothing arrived for the `IdleStateHandler`'s read timeout: a peer that stopped
/// answering (and a TCP connection that never started TLS) must not hold a session forever. The agent pings at
/// the keepalive interval the server gives it (a third of the server's timeout) while it has nothing to send;
/// the agent's own timeout is long (an hour: the server stays silent while it receives a long commit), with TCP
/// keepalive underneath.
public final class IdleCloseHandler: ChannelInboundHandler, Sendable {
    public typealias InboundIn = NIOAny

    public init() {}

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Adds an idle watch that closes the connection after `timeout` without a received byte.
    public func addIdleClose(after timeout: TimeAmount) throws {
        try addHandler(IdleStateHandler(readTimeout: timeout))
        try addHandler(IdleCloseHandler())
    }
}
