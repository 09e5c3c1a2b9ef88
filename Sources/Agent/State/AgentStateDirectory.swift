import Foundation
public import LifeboatCore
import LifeboatSystem

/// The agent's state directory (`--state DIR`, default /var/lib/lifeboat-agent), mode 0700:
///
/// ```
/// DIR/agent.json     AgentIdentity: server address, machine name, when enrolled
/// DIR/agent.key      the agent's private key (0600; made here, never sent anywhere)
/// DIR/agent.pem      its client certificate, signed by the server's CA
/// DIR/ca.pem         the server's CA (trust root for the replication connection)
/// DIR/pending.json   the commit sent but not yet acknowledged: sequence and tracker epochs
/// DIR/initial-sync.json  an initial sync that landed in part (commits that are not recovery points yet)
/// DIR/trackers/      change-tracking state per volume (fingerprint maps)
/// DIR/agent.lock     held while an agent runs on this directory
/// ```
public struct AgentStateDirectory: Sendable {
    public let root: String

    public init(root: String) {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
    }

    public var identity: String { root + "/agent.json" }
    public var key: String { root + "/agent.key" }
    public var certificate: String { root + "/agent.pem" }
    public var ca: String { root + "/ca.pem" }
    public var pending: String { root + "/pending.json" }
    public var initialSync: String { root + "/initial-sync.json" }
    public var trackers: String { root + "/trackers" }
    public var lock: String { root + "/agent.lock" }

    /// Whether `enroll` completed here.
    public var isEnrolled: Bool { SystemCalls.exists(identity) && SystemCalls.exists(certificate) && SystemCalls.exists(key) }
}

/// `agent.json`: who this agent is and where its server is.
public struct AgentIdentity: Codable, Sendable, Equatable {
    public var server: String
    public var machine: String
    public var enrolledAt: Timestamp
    public var certificateSerial: String

    public init(server: String, machine: String, enrolledAt: Timestamp, certificateSerial: String) {
        self.server = server
        self.machine = machine
        self.enrolledAt = enrolledAt
        self.certificateSerial = certificateSerial
    }

    public static func load(_ state: AgentStateDirectory) throws -> AgentIdentity {
        guard state.isEnrolled else {
            throw LifeboatError(
                "agent.not-enrolled",
                "\(state.root) holds no enrollment: run `lifeboat agent enroll --server HOST:1500 --token TOKEN --state \(state.root)` first"
            )
        }
        do {
            return try JSONDecoder().decode(AgentIdentity.self, from: Data(try SystemCalls.readFile(state.identity)))
        } catch {
            throw LifeboatError("agent.state", "\(state.identity) is damaged: enroll this agent again", cause: error)
        }
    }

    public func write(_ state: AgentStateDirectory) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try SystemCalls.writeFileAtomically(state.identity, Array(try encoder.encode(self)), mode: 0o600)
    }
}

/// `pending.json`: written (durably) before END_COMMIT, removed after the answer. On reconnect, WELCOME's last
/// committed sequence says whether this commit landed (acknowledge the epochs) or not (send again).
struct PendingCommit: Codable, Sendable, Equatable {
    var sequence: UInt64
    /// Tracker epoch per volume name: acknowledging it retires the volume's changes of this commit.
    var epochs: [String: UInt64]
    /// The commit is a part of an initial sync: the progress to record once it landed.
    var initialSyncAfter: InitialSyncProgress? = nil
    /// The commit completes an initial sync that landed in parts.
    var completesInitialSync: Bool? = nil

    static func load(_ state: AgentStateDirectory) -> PendingCommit? {
        guard let bytes = try? SystemCalls.readFile(state.pending) else { return nil }
        return try? JSONDecoder().decode(PendingCommit.self, from: Data(bytes))
    }

    func write(_ state: AgentStateDirectory) throws {
        try SystemCalls.writeFileAtomically(state.pending, Array(try JSONEncoder().encode(self)), mode: 0o600)
    }

    static func remove(_ state: AgentStateDirectory) throws {
        try SystemCalls.unlink(state.pending)
    }
}

/// `initial-sync.json`: an initial sync (or rescan) too large for one commit lands in parts; this file says
/// one is under way and how many bytes of it are durable on the server. Written durably after a part is
/// acknowledged, removed after the commit that completes it.
struct InitialSyncProgress: Codable, Sendable, Equatable {
    var committedBytes: Int64
    var parts: Int
    /// A rescan (the tracker lost its state) rather than a first sync.
    var rescan: Bool

    static func load(_ state: AgentStateDirectory) -> InitialSyncProgress? {
        guard let bytes = try? SystemCalls.readFile(state.initialSync) else { return nil }
        return try? JSONDecoder().decode(InitialSyncProgress.self, from: Data(bytes))
    }

    func write(_ state: AgentStateDirectory) throws {
        try SystemCalls.writeFileAtomically(state.initialSync, Array(try JSONEncoder().encode(self)), mode: 0o600)
    }

    static func remove(_ state: AgentStateDirectory) throws {
        guard SystemCalls.exists(state.initialSync) else { return }
        try SystemCalls.unlink(state.initialSync)
    }
}

/// Parses `HOST:PORT` (`[v6]:PORT` for IPv6); the port defaults to 1500.
public struct ServerAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(parsing text: String, defaultPort: Int = 1500) throws {
        var host = text
        var port = defaultPort
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw LifeboatError("agent.bad-server", "'\(text)' is not HOST:PORT")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let p = Int(rest.dropFirst()) else { throw LifeboatError("agent.bad-server", "'\(text)' has a bad port") }
                port = p
            }
        } else if let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon {
            host = String(text[..<colon])
            guard let p = Int(text[text.index(after: colon)...]) else {
                throw LifeboatError("agent.bad-server", "'\(text)' has a bad port: expected HOST:PORT, e.g. dr.example.com:1500")
            }
            port = p
        }
        guard !host.isEmpty, (1...65535).contains(port) else {
            throw LifeboatError("agent.bad-server", "'\(text)' is not HOST:PORT, e.g. dr.example.com:1500")
        }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether `host` is an IP address literal (TLS then checks the certificate's IP addresses).
    var isIPAddress: Bool { host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." } }
}
