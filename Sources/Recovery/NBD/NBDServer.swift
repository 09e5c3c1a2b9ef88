import LifeboatCore
public import Logging
public import NIOCore
public import NIOPosix
public import NIOSSL
public import ServiceLifecycle

/// An NBD server (fixed newstyle, structured replies, `base:allocation`) that offers registered exports to
/// real clients: qemu, libnbd's nbdinfo and nbdcopy, the kernel's nbd-client.
///
/// It listens on loopback unless configured otherwise; an address reachable from another host needs TLS, and
/// with TLS configured every client must STARTTLS before it sees any export. Requests of a connection run
/// concurrently on a thread pool and are answered as they complete. Run it as a `Service`, or call `start()`
/// and `close()`. Exports come and go at runtime (`register`, `unregister`); closing an overlay export is
/// its owner's job.
public final class NBDServer: Service, Sendable {
    public struct Configuration: Sendable {
        /// The address to listen on; anything but loopback requires `tls`.
        public var host: String
        /// The port; 0 picks a free one (see `port` once started).
        public var port: Int
        /// TLS for STARTTLS; when set, TLS is mandatory for every client.
        public var tls: NIOSSLContext?
        /// Requests of one connection that may run at once; beyond that the server stops reading.
        public var maxRequestsInFlight: Int
        /// With TLS: the DER encodings of the only client certificates accepted (pinned). Empty: no client
        /// certificate is asked for. The TLS configuration must request one (`.noHostnameVerification`).
        public var allowedClientCertificates: Set<[UInt8]> = []

        public init(host: String = "127.0.0.1", port: Int = 0, tls: NIOSSLContext? = nil, maxRequestsInFlight: Int = 64) {
            self.host = host
            self.port = port
            self.tls = tls
            self.maxRequestsInFlight = maxRequestsInFlight
        }

        /// Whether `host` can only be reached from this machine.
        public var isLoopback: Bool {
            host == "localhost" || host == "::1" || host.hasPrefix("127.")
        }
    }

    public let configuration: Configuration
    let logger: Logger
    let group: any EventLoopGroup
    let pool: NIOThreadPool
    private let ownsPool: Bool
    let registry = ExportRegistry()
    let connections = ConnectionSet()
    private let listener = LockedValue<(any Channel)?>(nil)

    /// - Parameters:
    ///   - threadPool: where export I/O runs; by default the server starts and stops its own.
    /// - Throws: `nbd.tls-required` for a non-loopback address without TLS.
    public init(
        configuration: Configuration = Configuration(),
        threadPool: NIOThreadPool? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) throws {
        guard configuration.isLoopback || configuration.tls != nil else {
            throw LifeboatError(
                "nbd.tls-required",
                "an NBD export on \(configuration.host) would be reachable from other hosts without encryption: "
                    + "configure TLS or listen on 127.0.0.1"
            )
        }
        self.configuration = configuration
        self.logger = logger
        self.group = group
        if let threadPool {
            pool = threadPool
            ownsPool = false
        } else {
            pool = NIOThreadPool(numberOfThreads: 4)
            ownsPool = true
        }
    }

    // MARK: Exports

    /// Offers `export` under its name. Throws `nbd.export-exists` when the name is taken.
    public func register(_ export: any NBDExport) throws {
        guard registry.add(export) else {
            throw LifeboatError("nbd.export-exists", "an NBD export named '\(export.name)' is already registered")
        }
        logger.info("NBD export registered", metadata: ["export": "\(export.name)", "size": "\(export.size)"])
    }

    /// Stops offering an export to new connections (connected clients keep it until they disconnect).
    @discardableResult
    public func unregister(name: String) -> (any NBDExport)? {
        registry.remove(name)
    }

    /// The names of the registered exports.
    public var exportNames: [String] { registry.snapshot().keys.sorted() }

    // MARK: Running

    /// The bound port once started.
    public var port: Int? { listener.value?.localAddress?.port }

    /// `nbd://HOST:PORT/NAME` (or `nbds://` with TLS) for an export, once started.
    public func uri(for export: String) -> String? {
        guard let port else { return nil }
        let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
        return "\(configuration.tls == nil ? "nbd" : "nbds")://\(host):\(port)/\(export)"
    }

    /// Binds and starts accepting connections.
    public func start() async throws {
        if ownsPool { pool.start() }
        let settings = ConnectionSettings(
            registry: registry,
            pool: pool,
            tls: configuration.tls,
            allowedClientCertificates: configuration.allowedClientCertificates,
            maxInFlight: max(1, configuration.maxRequestsInFlight),
            logger: logger
        )
        let connections = self.connections
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        connections.add(channel)
                        try channel.pipeline.syncOperations.addHandler(NBDConnectionHandler(settings: settings))
                    }
                }
                .bind(host: configuration.host, port: configuration.port)
                .get()
        } catch {
            if ownsPool { try? await pool.shutdownGracefully() }
            throw LifeboatError(
                "nbd.bind",
                "cannot listen for NBD on \(configuration.host):\(configuration.port): is the port in use?",
                cause: error
            )
        }
        listener.value = channel
        logger.notice(
            "NBD server listening",
            metadata: ["address": "\(configuration.host):\(channel.localAddress?.port ?? configuration.port)", "tls": "\(configuration.tls != nil)"]
        )
    }

    /// Stops accepting, closes every connection and stops the thread pool if the server owns it.
    public func close() async throws {
        if let channel = listener.value {
            try? await channel.close()
            listener.value = nil
        }
        await connections.closeAll()
        if ownsPool { try? await pool.shutdownGracefully() }
        logger.notice("NBD server stopped")
    }

    /// Runs until graceful shutdown.
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        try await close()
    }
}

/// The exports by name, shared by every connection.
final class ExportRegistry: Sendable {
    private let exports = LockedValue<[String: any NBDExport]>([:])
    private let lock = PlainLock()

    func add(_ export: any NBDExport) -> Bool {
        lock.withLock {
            var all = exports.value
            guard all[export.name] == nil else { return false }
            all[export.name] = export
            exports.value = all
            return true
        }
    }

    func remove(_ name: String) -> (any NBDExport)? {
        lock.withLock {
            var all = exports.value
            let removed = all.removeValue(forKey: name)
            exports.value = all
            return removed
        }
    }

    func export(named name: String) -> (any NBDExport)? { exports.value[name] }

    func snapshot() -> [String: NBDExportInfo] { exports.value.mapValues(\.info) }
}

/// Open connections, to close them when the server stops.
final class ConnectionSet: Sendable {
    private let channels = LockedValue<[ObjectIdentifier: any Channel]>([:])
    private let lock = PlainLock()

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        lock.withLock { channels.value[id] = channel }
        channel.closeFuture.whenComplete { _ in
            self.lock.withLock { self.channels.value[id] = nil }
        }
    }

    func closeAll() async {
        let all = lock.withLock { Array(channels.value.values) }
        for channel in all { try? await channel.close() }
    }
}
