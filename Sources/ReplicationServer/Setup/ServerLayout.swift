import LifeboatCore

/// Where everything of a replication server lives under its data directory (`lifeboat server init --data DIR`).
///
/// ```
/// DIR/server.json        ServerConfiguration (listen address, names in the certificate, defaults)
/// DIR/ca/ca.pem          the certificate authority that signs agent certificates   (0644)
/// DIR/ca/ca.key          its private key                                          (0600)
/// DIR/tls/server.pem     the replication endpoint's certificate, chained to the CA (0644)
/// DIR/tls/server.key     its private key                                          (0600)
/// DIR/store/             the staging store
/// DIR/store.key          the store's master key                                   (0600)
/// DIR/catalog.sqlite     the catalog
/// DIR/instances/ID/      one recovery instance: copy-on-write overlays, console log, launcher output (0700)
/// DIR/nbd-client/        ca-cert.pem for QEMU when the NBD server requires TLS
/// ```
public struct ServerLayout: Sendable {
    public let root: String

    public init(root: String) {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
    }

    public var configuration: String { root + "/server.json" }
    public var caDirectory: String { root + "/ca" }
    public var caCertificate: String { root + "/ca/ca.pem" }
    public var caKey: String { root + "/ca/ca.key" }
    public var tlsDirectory: String { root + "/tls" }
    public var serverCertificate: String { root + "/tls/server.pem" }
    public var serverKey: String { root + "/tls/server.key" }
    public var store: String { root + "/store" }
    public var storeKey: String { root + "/store.key" }
    public var catalog: String { root + "/catalog.sqlite" }
    public var instances: String { root + "/instances" }
    public var nbdClientTLS: String { root + "/nbd-client" }
}
