import ArgumentParser
import Catalog
import ControlPlane
import LifeboatSystem
import Foundation
import NIOSSL
import Recovery
import LifeboatCore
import Logging
import ReplicationServer
import ReplicationTransport
import ServiceLifecycle
import UnixSignals
import StagingStore

struct ServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Set up and run the replication server (the recovery site's side).",
        subcommands: [ServerInit.self, ServerRun.self]
    )
}

/// `--data DIR`, shared by every command that works on the server's data directory.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "The server's data directory (or set LIFEBOAT_DATA).")
    var data: String?

    func directory() throws -> String {
        guard let path = data ?? ProcessEnvironment.value("LIFEBOAT_DATA") else {
            throw LifeboatError("cli.no-data", "no data directory given: use --data DIR or set LIFEBOAT_DATA")
        }
        return path
    }

    var layout: ServerLayout {
        get throws { ServerLayout(root: try directory()) }
    }

    func openCatalog() throws -> Catalog {
        let layout = try self.layout
        guard ProcessEnvironment.exists(layout.configuration) else {
            throw LifeboatError(
                "server.not-initialized",
                "\(layout.root) is not a server data directory: create one with `lifeboat server init --data \(layout.root)`"
            )
        }
        return try Catalog.open(path: layout.catalog)
    }
}

/// Splits `HOST:PORT`.
func parseListen(_ text: String) throws -> (host: String, port: Int) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
        throw LifeboatError("cli.bad-listen", "'\(text)' is not HOST:PORT (e.g. 0.0.0.0:1500)")
    }
    var host = String(text[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host.isEmpty ? "0.0.0.0" : host, port)
}

struct ServerInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the data directory: configuration, certificate authority, server certificate, store, catalog."
    )

    @OptionGroup var data: DataOptions

    @Option(name: .long, help: "A name or address agents use to reach this server (repeatable; default: this host's name, localhost, 127.0.0.1, ::1).")
    var name: [String] = []

    @Option(name: .long, help: "Where the replication endpoint listens (HOST:PORT).")
    var listen: String = "0.0.0.0:1500"

    @Option(name: .long, help: "Where the NBD server for recovery instances' disks listens (HOST:PORT; not loopback = TLS required).")
    var nbdListen: String = ServerConfiguration.defaultNBDListen

    @Option(name: .long, help: "Where the REST API and console listen (HOST:PORT, HTTPS).")
    var apiListen: String = ServerConfiguration.defaultAPIListen

    func run() throws {
        try lifeboat.run {
            let (host, port) = try parseListen(listen)
            _ = try parseListen(nbdListen)
            let (apiHost, apiPort) = try parseListen(apiListen)
            var names = name
            if names.isEmpty { names = [ProcessEnvironment.hostName(), "localhost", "127.0.0.1", "::1"] }
            // Recovery machines on this host reach the NBD server (TLS beyond loopback) as 127.0.0.1.
            for local in ["localhost", "127.0.0.1"] where !names.contains(local) { names.append(local) }
            let configuration = ServerConfiguration(
                listenHost: host, listenPort: port, names: names, nbdListen: nbdListen, apiListen: apiListen
            )
            let summary = try ServerSetup.initialize(dataDirectory: try data.directory(), configuration: configuration)
            let root = summary.layout.root
            print("Replication server created in \(root)")
            print("  store:           \(summary.layout.store) (key \(summary.layout.storeKey): keep a copy offline)")
            print("  catalog:         \(summary.layout.catalog)")
            print("  CA fingerprint:  \(summary.caFingerprint)")
            print("  certificate for: \(names.joined(separator: ", "))")
            print("")
            print("Next:")
            print("  lifeboat users create admin --roles admin --password-stdin --data \(root)   # the first admin")
            print("  lifeboat server run --data \(root)")
            print("  lifeboat login --server https://\(names[0]):\(apiPort) --user admin --ca \(summary.layout.caCertificate)")
            _ = apiHost
            print("  lifeboat tokens create --data \(root)          # one per machine to protect")
            print("  lifeboat agent enroll --server \(names[0]):\(port) --token TOKEN   # on the source machine")
        }
    }
}

struct ServerRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the replication server until SIGTERM or SIGINT."
    )

    @OptionGroup var data: DataOptions

    @Option(name: .long, help: "Override the configured listen address (HOST:PORT; port 0 picks a free port).")
    var listen: String?

    @Option(name: .long, help: "Override where the NBD server for recovery instances listens (HOST:PORT; port 0 picks a free port).")
    var nbdListen: String?

    @Option(name: .long, help: "Override where the REST API and console listen (HOST:PORT; port 0 picks a free port).")
    var apiListen: String?

    @Flag(name: .long, help: "Serve the API over plain HTTP (allowed on a loopback address only).")
    var apiPlainHttp = false

    func run() async throws {
        try await runAsync {
            let layout = try data.layout
            let logger = Logger(label: "lifeboat.server")
            SystemCalls.tuneAllocatorForBuffers()
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            let store = try Store.open(
                LocalDirectoryBackend(root: layout.store),
                key: .keyFile(path: layout.storeKey),
                access: .write,
                logger: Logger(label: "lifeboat.store")
            )
            defer { store.close() }
            let override = try listen.map(parseListen)
            let service = try ReplicationService(
                dataDirectory: layout.root,
                store: store,
                catalog: catalog,
                listenHost: override?.host,
                listenPort: override?.port,
                logger: logger
            )
            let nbd = try makeNBDServer(layout: layout, override: nbdListen, logger: logger)
            // Running recovery machines reconnect to the port they know: it must not change under them.
            let holding = try catalog.instances()
            if nbd.configuration.port == 0 && !holding.isEmpty {
                throw LifeboatError(
                    "server.nbd-port",
                    "\(holding.count) recovery instance(s) (\(holding.map(\.id).joined(separator: ", "))) read their disks from the NBD server's port: give the port they use (see DATA/nbd.address) instead of port 0"
                )
            }
            var launchConfiguration = LaunchService.Configuration(
                instancesDirectory: layout.instances,
                nbdHost: Self.clientHost(nbd.configuration.host),
                nbdPort: nbd.configuration.port,
                nbdTLSDirectory: nbd.configuration.tls == nil ? nil : layout.nbdClientTLS
            )
            launchConfiguration.addressFile = layout.root + "/nbd.address"
            let launch = LaunchService(
                configuration: launchConfiguration,
                catalog: catalog,
                store: store,
                nbd: nbd,
                logger: Logger(label: "lifeboat.launch")
            )
            let api = try makeControlPlane(layout: layout, catalog: catalog, store: store)
            // Shutdown runs in reverse: API, replication, launch, then the NBD server.
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [.init(service: nbd), .init(service: launch), .init(service: service), .init(service: api)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger
                )
            )
            try await group.run()
        }
    }
}

extension ServerRun {
    /// The REST API: HTTPS with the server's certificate unless plain HTTP on loopback was asked for. The port
    /// it listens on is written to `DATA/api.address` (useful with port 0).
    func makeControlPlane(layout: ServerLayout, catalog: Catalog, store: Store) throws -> some Service {
        let configured = try ServerConfiguration.load(layout.configuration).apiListen ?? ServerConfiguration.defaultAPIListen
        let (host, port) = try parseListen(apiListen ?? configured)
        var tls: TLSConfiguration?
        if !apiPlainHttp {
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(layout.serverCertificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: layout.serverKey, format: .pem))
            )
            configuration.minimumTLSVersion = .tlsv12
            tls = configuration
        }
        let ca = try CertificateInspection.der(fromPEM: String(decoding: try readSmallFile(layout.caCertificate), as: UTF8.self))
        let metrics = ControlPlaneMetrics()
        metrics.bootstrapSwiftMetrics()
        let server = try ControlPlaneServer(
            configuration: .init(
                host: host, port: port, tls: tls, version: Lifeboat.configuration.version,
                enrollmentFingerprint: CertificateInspection.fingerprint(ofDER: ca)
            ),
            catalog: catalog,
            store: store,
            metrics: metrics,
            logger: Logger(label: "lifeboat.api")
        )
        let addressFile = layout.root + "/api.address"
        let scheme = tls == nil ? "http" : "https"
        let clientHost = Self.clientHost(host)
        return try server.application { port in
            let text = "\(scheme)://\(clientHost.contains(":") ? "[\(clientHost)]" : clientHost):\(port)\n"
            try? SystemCalls.writeFileAtomically(addressFile, Array(text.utf8), mode: 0o644)
        }
    }

    /// The NBD server for recovery instances: loopback without TLS, any other address with the server's
    /// certificate (and the CA copied where QEMU looks for it).
    func makeNBDServer(layout: ServerLayout, override: String?, logger: Logger) throws -> NBDServer {
        let configured = try ServerConfiguration.load(layout.configuration).nbdListen ?? ServerConfiguration.defaultNBDListen
        let (host, port) = try parseListen(override ?? configured)
        var configuration = NBDServer.Configuration(host: host, port: port)
        if !configuration.isLoopback {
            let tls = try TLSSetup.nbdServerConfiguration(
                certificatePEMPath: layout.serverCertificate,
                keyPEMPath: layout.serverKey,
                caPEMPath: layout.caCertificate
            )
            configuration.tls = try TLSSetup.makeContext(tls)
            configuration.allowedClientCertificates = [try Self.nbdClientIdentity(layout: layout)]
        }
        return try NBDServer(configuration: configuration, logger: Logger(label: "lifeboat.nbd"))
    }

    /// The identity QEMU presents to the NBD server (QEMU's `tls-creds-x509` directory layout): `ca-cert.pem`,
    /// `client-cert.pem` and `client-key.pem` (0600) in `DATA/nbd-client/`, issued by the server's CA on first use.
    /// Returns the certificate (DER), the only one the NBD server accepts.
    static func nbdClientIdentity(layout: ServerLayout) throws -> [UInt8] {
        let directory = layout.nbdClientTLS
        let certificatePath = directory + "/client-cert.pem"
        let keyPath = directory + "/client-key.pem"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let ca = try Data(contentsOf: URL(fileURLWithPath: layout.caCertificate))
        try ca.write(to: URL(fileURLWithPath: directory + "/ca-cert.pem"), options: .atomic)
        if let pem = try? String(contentsOfFile: certificatePath, encoding: .utf8), FileManager.default.fileExists(atPath: keyPath),
            let der = try? CertificateInspection.der(fromPEM: pem)
        {
            return der
        }
        let authority = try CertificateAuthority.load(certificatePath: layout.caCertificate, keyPath: layout.caKey)
        let key = AgentKey.generate()
        let issued = try authority.signClientCertificate(
            csrDER: try key.certificateSigningRequest(machine: "lifeboat-nbd-client"),
            machine: "lifeboat-nbd-client"
        )
        try key.write(path: keyPath)
        try Data(issued.pem.utf8).write(to: URL(fileURLWithPath: certificatePath), options: .atomic)
        return issued.der
    }

    /// Where clients on this host reach a server listening on `host`.
    static func clientHost(_ host: String) -> String {
        switch host {
        case "0.0.0.0", "": return "127.0.0.1"
        case "::": return "::1"
        default: return host
        }
    }
}
