import Catalog
public import LifeboatCore
import LifeboatSystem
import ReplicationTransport
import StagingStore

/// `lifeboat server init`: everything a replication server needs, made once.
public enum ServerSetup {
    /// What `initialize` made, for the operator.
    public struct Summary: Sendable {
        public var layout: ServerLayout
        public var configuration: ServerConfiguration
        public var caFingerprint: String
        public var storeID: String
    }

    /// Creates the data directory: configuration, certificate authority, server certificate, staging store (with
    /// a new key file) and catalog. Refuses (`server.exists`) a directory that already holds a server, and
    /// removes what it made if a step fails, so a failed init can simply be repeated.
    public static func initialize(
        dataDirectory: String,
        configuration: ServerConfiguration,
        clock: any WallClock = SystemWallClock()
    ) throws -> Summary {
        let layout = ServerLayout(root: dataDirectory)
        if SystemCalls.exists(layout.configuration) || SystemCalls.exists(layout.caCertificate) {
            throw LifeboatError(
                "server.exists",
                "\(layout.root) already holds a replication server; run it with `lifeboat server run --data \(layout.root)`"
            )
        }
        guard !configuration.names.isEmpty else {
            throw LifeboatError("server.config", "the server certificate needs at least one name (--name)")
        }
        let existed = SystemCalls.exists(layout.root)
        if existed, let entries = try? SystemCalls.listDirectory(layout.root), !entries.isEmpty {
            throw LifeboatError(
                "server.not-empty",
                "\(layout.root) is not empty: choose a new or empty directory for the server's data"
            )
        }
        var made: [String] = []
        do {
            try SystemCalls.makeDirectory(layout.root, mode: 0o700)
            for dir in [layout.caDirectory, layout.tlsDirectory] {
                try SystemCalls.makeDirectory(dir, mode: 0o700)
                made.append(dir)
            }
            let ca = try CertificateAuthority.create(commonName: "Lifeboat replication CA (\(configuration.names[0]))")
            try ca.write(certificatePath: layout.caCertificate, keyPath: layout.caKey)
            made += [layout.caCertificate, layout.caKey]
            let server = try ca.issueServerCertificate(names: configuration.names)
            try SystemCalls.writeFileAtomically(layout.serverCertificate, Array((server.certificatePEM + ca.certificatePEM).utf8), mode: 0o644)
            made.append(layout.serverCertificate)
            try SystemCalls.writeFileAtomically(layout.serverKey, Array(server.privateKeyPEM.utf8), mode: 0o600)
            made.append(layout.serverKey)

            made += [layout.store, layout.storeKey]
            let store = try Store.create(at: LocalDirectoryBackend(root: layout.store), key: .keyFile(path: layout.storeKey), clock: clock)
            made.append(layout.catalog)
            let catalog = try Catalog.open(path: layout.catalog, clock: clock)
            catalog.close()
            try configuration.write(layout.configuration)
            made.append(layout.configuration)
            return Summary(layout: layout, configuration: configuration, caFingerprint: ca.fingerprint, storeID: store.id)
        } catch {
            for path in made.reversed() { removeQuietly(path) }
            if !existed { removeQuietly(layout.root) }
            throw error
        }
    }

    private static func removeQuietly(_ path: String) {
        try? SystemCalls.removeTree(path)
        for suffix in ["-wal", "-shm"] { try? SystemCalls.removeTree(path + suffix) }
    }
}
