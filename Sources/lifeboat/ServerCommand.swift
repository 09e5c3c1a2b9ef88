import ArgumentParser
import Catalog
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

    func run() throws {
        try lifeboat.run {
            let (host, port) = try parseListen(listen)
            var names = name
            if names.isEmpty { names = [ProcessEnvironment.hostName(), "localhost", "127.0.0.1", "::1"] }
            let configuration = ServerConfiguration(listenHost: host, listenPort: port, names: names)
            let summary = try ServerSetup.initialize(dataDirectory: try data.directory(), configuration: configuration)
            let root = summary.layout.root
            print("Replication server created in \(root)")
            print("  store:           \(summary.layout.store) (key \(summary.layout.storeKey): keep a copy offline)")
            print("  catalog:         \(summary.layout.catalog)")
            print("  CA fingerprint:  \(summary.caFingerprint)")
            print("  certificate for: \(names.joined(separator: ", "))")
            print("")
            print("Next:")
            print("  lifeboat server run --data \(root)")
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

    func run() async throws {
        try await runAsync {
            let layout = try data.layout
            let logger = Logger(label: "lifeboat.server")
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
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [.init(service: service)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger
                )
            )
            try await group.run()
        }
    }
}
