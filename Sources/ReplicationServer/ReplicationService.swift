public import Catalog
public import LifeboatCore
import LifeboatSystem
public import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ReplicationProtocol
import ReplicationTransport
public import ServiceLifecycle
public import StagingStore

/// The replication endpoint as a `Service`: accepts agent connections over TLS 1.3 with client certificates,
/// runs one session per connection, writes the staging store and records state in the catalog. Stops
/// accepting on graceful shutdown and closes every session (a commit still receiving is abandoned; acknowledged
/// commits are durable by then).
public final class ReplicationService: Service, Sendable {
    public let layout: ServerLayout
    public let configuration: ServerConfiguration
    let store: Store
    let catalog: Catalog
    let authority: CertificateAuthority
    let sslContext: NIOSSLContext
    let logger: Logger
    let clock: any WallClock
    let pool: NIOThreadPool
    let gate = CommitGate()
    let sessions = SessionRegistry()
    private let boundAddress = LockedValue<String?>(nil)

    /// Opens what the data directory holds. `listen` overrides the configured address (`HOST:PORT`; port 0
    /// picks a free one, written to `DIR/replication.address` once bound).
    public init(
        dataDirectory: String,
        store: Store,
        catalog: Catalog,
        listenHost: String? = nil,
        listenPort: Int? = nil,
        clock: any WallClock = SystemWallClock(),
        logger: Logger
    ) throws {
        let layout = ServerLayout(root: dataDirectory)
        var configuration = try ServerConfiguration.load(layout.configuration)
        if let listenHost { configuration.listenHost = listenHost }
        if let listenPort { configuration.listenPort = listenPort }
        self.layout = layout
        self.configuration = configuration
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.logger = logger
        authority = try CertificateAuthority.load(certificatePath: layout.caCertificate, keyPath: layout.caKey)
        let tls = try TLSSetup.serverConfiguration(
            certificatePEMPath: layout.serverCertificate,
            keyPEMPath: layout.serverKey,
            caPEMPath: layout.caCertificate
        )
        do {
            sslContext = try TLSSetup.makeContext(tls)
        } catch {
            throw LifeboatError("tls.setup", "cannot set up TLS from \(layout.tlsDirectory)", cause: error)
        }
        // Store and catalog work of every session: decoding and sealing extents keeps the cores busy, and a
        // session's in-order writes should not queue behind another session's decoding.
        pool = NIOThreadPool(numberOfThreads: max(4, System.coreCount * 2))
    }

    /// `HOST:PORT` the endpoint listens on, once bound.
    public var address: String? { boundAddress.value }

    public func run() async throws {
        pool.start()
        // Connections of an earlier run (perhaps killed) are gone: nobody is connected yet.
        for machine in (try? catalog.machines()) ?? [] where machine.connected {
            try? catalog.recordDisconnected(machine: machine.name, reason: "the replication server restarted")
        }
        defer { Task { try? await pool.shutdownGracefully() } }
        let sslContext = self.sslContext
        let idle = TimeAmount.seconds(Int64(configuration.idleTimeoutSeconds))
        let server: NIOAsyncChannel<NIOAsyncChannel<Message, Message>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: configuration.listenHost, port: configuration.listenPort) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addIdleClose(after: idle)
                        try sync.addHandler(NIOSSLServerHandler(context: sslContext))
                        try sync.addFrameCodec()
                        return try NIOAsyncChannel<Message, Message>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw LifeboatError(
                "server.bind",
                "cannot listen on \(configuration.listenHost):\(configuration.listenPort): is another server running, or is the port in use?",
                cause: error
            )
        }
        let port = server.channel.localAddress?.port ?? configuration.listenPort
        let address = "\(configuration.listenHost):\(port)"
        boundAddress.value = address
        try? SystemCalls.writeFileAtomically(layout.root + "/replication.address", Array((address + "\n").utf8), mode: 0o644)
        logger.notice("replication endpoint listening", metadata: ["address": "\(address)"])

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await self.pushSettingsChanges() }
                group.addTask { await self.compressInBackground() }
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            self.logger.notice("replication endpoint stopping")
            server.channel.close(promise: nil)
            self.sessions.closeAll()
        }
        logger.notice("replication endpoint stopped")
    }

    /// The settings for a machine's agent, from its catalog record and the server's configuration.
    func settings(for record: MachineRecord) -> AgentSettings {
        AgentSettings(
            throttleMbps: record.throttleMbps,
            maxFreezeMilliseconds: record.maxFreezeMilliseconds,
            keepaliveMilliseconds: UInt32(max(100, configuration.idleTimeoutSeconds * 1000 / 3)),
            paused: record.paused
        )
    }

    /// How often the catalog is checked for settings an operator changed (`lifeboat machines set|pause|resume`).
    static let settingsPollInterval = Duration.seconds(1)

    /// Until the server stops: sends connected agents their settings when the catalog's differ from what they
    /// were last given, so that throttling, the freeze limit and pausing apply without a reconnect.
    func pushSettingsChanges() async {
        // Cancellation (another service of the group failed) ends the loop too: a cancelled sleep returns at once.
        while !sessions.isClosing && !Task.isCancelled {
            try? await Task.sleep(for: Self.settingsPollInterval)
            let current = sessions.machineSessions()
            guard !current.isEmpty else { continue }
            let records: [String: MachineRecord]
            do {
                records = try await pool.blocking { [catalog] in
                    Dictionary(try catalog.machines().map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
                }
            } catch {
                logger.warning("cannot read settings from the catalog", metadata: ["error": "\(error)"])
                continue
            }
            for (machine, channel, sent) in current {
                guard let record = records[machine], record.isActive else { continue }
                let settings = settings(for: record)
                guard settings != sent, sessions.settingsSent(settings, machine: machine, channel: channel) else { continue }
                channel.writeAndFlush(Message.settings(settings), promise: nil)
                logger.notice(
                    "settings sent to the agent",
                    metadata: [
                        "machine": "\(machine)", "paused": "\(settings.paused)",
                        "throttle-mbps": "\(settings.throttleMbps)", "max-freeze-ms": "\(settings.maxFreezeMilliseconds)",
                    ]
                )
            }
        }
    }

    /// How often background compression looks for work when it found none.
    static let compressionPollInterval = Duration.seconds(1)
    /// How long background compression waits after a failed pass.
    static let compressionRetryInterval = Duration.seconds(60)

    /// Until the server stops: compresses chunks that landed plain (`Store.compressDeferred`), one pack per
    /// turn, whenever no session holds or waits for the store's commit turn — a commit that arrives meanwhile
    /// waits for at most one pack (32 MiB). Deletes retired packs after their grace period.
    func compressInBackground() async {
        while !sessions.isClosing && !Task.isCancelled {
            guard store.deferredBlobCount > 0 || store.hasRetiredPacks, await gate.tryAcquire() else {
                try? await Task.sleep(for: Self.compressionPollInterval)
                continue
            }
            var pause = Duration.zero
            do {
                let report = try await pool.blocking { [store] in try store.compressDeferred(packLimit: 1) }
                // Nothing more to do now (only retired packs still in their grace period): look again later.
                if report.packsRewritten == 0 { pause = Self.compressionPollInterval }
            } catch {
                // A damaged pack fails every pass: say so once a minute, not every second (store verify names it).
                pause = Self.compressionRetryInterval
                logger.warning("background compression failed", metadata: ["error": "\(error)"])
            }
            await gate.release()
            if pause > .zero { try? await Task.sleep(for: pause) }
        }
    }

    /// Runs one connection to its end; never throws (a failed session is logged and affects nothing else).
    func serve(_ connection: NIOAsyncChannel<Message, Message>) async {
        let channel = connection.channel
        guard sessions.add(channel) else {
            channel.close(promise: nil)
            return
        }
        let session = AgentSession(service: self, channel: channel)
        await session.run(connection)
        sessions.remove(channel, machine: nil)
    }
}
