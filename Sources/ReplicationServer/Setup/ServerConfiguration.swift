import Foundation
import LifeboatCore
import LifeboatSystem

/// `server.json`: what `server init` chose and `server run` uses. Edited by hand only with the server stopped.
public struct ServerConfiguration: Codable, Sendable, Equatable {
    /// The replication endpoint's address (`0.0.0.0` for every interface).
    public var listenHost: String
    public var listenPort: Int
    /// Names and addresses in the server certificate: agents must reach the server by one of them.
    public var names: [String]
    /// Settings a newly enrolled machine starts with.
    public var defaultThrottleMbps: UInt32
    public var defaultMaxFreezeMilliseconds: UInt32
    /// Seconds without a received frame after which a connection is considered dead and closed.
    public var idleTimeoutSeconds: Int
    /// Where the NBD server that serves recovery instances' disks listens (`HOST:PORT`); nil = the default,
    /// loopback only. Any other address requires TLS (the server's certificate).
    public var nbdListen: String?
    /// Where the REST API and console listen (`HOST:PORT`, HTTPS with the server's certificate); nil = the
    /// default, every interface on 8443.
    public var apiListen: String?

    public static let defaultPort = 1500
    public static let defaultAPIListen = "0.0.0.0:8443"
    public static let defaultNBDListen = "127.0.0.1:10809"

    public init(
        listenHost: String = "0.0.0.0",
        listenPort: Int = ServerConfiguration.defaultPort,
        names: [String],
        defaultThrottleMbps: UInt32 = 0,
        defaultMaxFreezeMilliseconds: UInt32 = 250,
        idleTimeoutSeconds: Int = 60,
        nbdListen: String? = nil,
        apiListen: String? = nil
    ) {
        self.apiListen = apiListen
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.names = names
        self.defaultThrottleMbps = defaultThrottleMbps
        self.defaultMaxFreezeMilliseconds = defaultMaxFreezeMilliseconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.nbdListen = nbdListen
    }

    /// Reads `server.json`; `server.config` errors say which file and what is wrong.
    public static func load(_ path: String) throws -> ServerConfiguration {
        let bytes: [UInt8]
        do {
            bytes = try SystemCalls.readFile(path)
        } catch {
            throw LifeboatError(
                "server.config",
                "cannot read \(path): is this a data directory made by `lifeboat server init`?",
                cause: error
            )
        }
        do {
            let config = try JSONDecoder().decode(ServerConfiguration.self, from: Data(bytes))
            guard (0...65535).contains(config.listenPort) else {
                throw LifeboatError("server.config", "listenPort \(config.listenPort) is not a TCP port")
            }
            return config
        } catch let error as LifeboatError {
            throw error
        } catch {
            throw LifeboatError("server.config", "\(path) is not a valid server configuration", cause: error)
        }
    }

    public func write(_ path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try SystemCalls.writeFileAtomically(path, Array(try encoder.encode(self)), mode: 0o644)
    }
}
