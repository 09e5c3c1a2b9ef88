public import Catalog
public import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import LifeboatCore
public import Logging
public import NIOSSL
import Prometheus
public import StagingStore

/// The control plane's HTTP server: the REST API under `/api/v1` and `/metrics`, HTTPS with the server's
/// certificate (plain HTTP only on loopback, when asked for). Build it once and run `application` in the
/// server's `ServiceGroup`.
public struct ControlPlaneServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// nil = plain HTTP, which `init` allows on loopback only.
        public var tls: TLSConfiguration?
        public var version: String
        /// The SHA-256 fingerprint of the server's CA (hex), part of the enrollment tokens the API creates.
        public var enrollmentFingerprint: String?

        public init(host: String, port: Int, tls: TLSConfiguration?, version: String, enrollmentFingerprint: String? = nil) {
            self.host = host
            self.port = port
            self.tls = tls
            self.version = version
            self.enrollmentFingerprint = enrollmentFingerprint
        }

        public var isLoopback: Bool { ["127.0.0.1", "::1", "localhost"].contains(host) || host.hasPrefix("127.") }
    }

    /// The default address of the API and console (DESIGN §3).
    public static let defaultListen = "0.0.0.0:8443"

    public let configuration: Configuration
    let api: APIHandlers

    /// - Throws: `api.plain-http` when asked for plain HTTP on an address other than loopback.
    public init(
        configuration: Configuration,
        catalog: Catalog,
        store: Store,
        metrics: ControlPlaneMetrics,
        clock: any WallClock = SystemWallClock(),
        logger: Logger
    ) throws {
        if configuration.tls == nil && !configuration.isLoopback {
            throw LifeboatError(
                "api.plain-http",
                "the API serves plain HTTP only on loopback (127.0.0.1 or ::1), not on \(configuration.host): drop the plain-HTTP option to serve HTTPS"
            )
        }
        self.configuration = configuration
        self.api = APIHandlers(
            catalog: catalog, store: store, metrics: metrics, version: configuration.version,
            enrollmentFingerprint: configuration.enrollmentFingerprint, clock: clock, logger: logger
        )
    }

    /// Every route the server answers, with the permission it needs (nil = no login): the source of truth
    /// for the authorization matrix and the OpenAPI document's test.
    public static var routes: [RouteSpec] { RouteTable.all }

    /// The Hummingbird application (a `Service`), listening on `onListening`'s port once running.
    public func application(
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        let router = Router(context: APIRequestContext.self)
        router.add(middleware: OutcomeMiddleware(catalog: api.catalog, logger: api.logger))
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: AuthenticationMiddleware(catalog: api.catalog))
        api.register(on: router)
        api.registerConsole(on: router)
        let responder = router.buildResponder()
        api.responder.set(responder)
        // Idle connections (also ones that never finish a TLS handshake) are closed after a minute.
        let http = HTTP1Channel.Configuration(idleTimeout: .seconds(60))
        let server: HTTPServerBuilder =
            if let tls = configuration.tls {
                try .tls(.http1(configuration: http), tlsConfiguration: tls)
            } else {
                .http1(configuration: http)
            }
        return Application(
            responder: responder,
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: api.logger
        )
    }
}
