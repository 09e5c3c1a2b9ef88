/// What proves a recovery instance works. Written as text by operators and stored that way:
///
/// - `serial:REGEX` — a serial-console line matches REGEX
/// - `tcp:PORT` — the instance's PORT accepts a TCP connection
/// - `http:PORT:PATH[:STATUS[:REGEX]]` — `GET PATH` on PORT answers STATUS (default 200) with a body matching REGEX
/// - `command:SHELL` — `/bin/sh -c SHELL` exits 0 (environment: `LIFEBOAT_INSTANCE`, `LIFEBOAT_HOST`,
///   `LIFEBOAT_PORT_<guest port>`, `LIFEBOAT_CONSOLE`)
public enum AcceptanceCheck: Sendable, Equatable, Codable, CustomStringConvertible {
    case serial(pattern: String)
    case tcp(port: Int)
    case http(port: Int, path: String, status: Int, bodyPattern: String?)
    case command(String)

    /// Parses the text form.
    ///
    /// - Throws: `launch.bad-check` naming what is wrong and the accepted forms.
    public init(parsing text: String) throws {
        let forms = "use serial:REGEX, tcp:PORT, http:PORT:PATH[:STATUS[:REGEX]] or command:SHELL"
        guard let colon = text.firstIndex(of: ":") else {
            throw LifeboatError("launch.bad-check", "acceptance check '\(text)' has no kind: \(forms)")
        }
        let kind = text[..<colon]
        let rest = String(text[text.index(after: colon)...])
        func port(_ s: Substring) throws -> Int {
            guard let p = Int(s), (1...65535).contains(p) else {
                throw LifeboatError("launch.bad-check", "acceptance check '\(text)': '\(s)' is not a port (1-65535)")
            }
            return p
        }
        func regex(_ s: String) throws -> String {
            guard !s.isEmpty else {
                throw LifeboatError("launch.bad-check", "acceptance check '\(text)' needs a pattern: \(forms)")
            }
            do {
                _ = try Regex(s)
            } catch {
                throw LifeboatError("launch.bad-check", "acceptance check '\(text)': '\(s)' is not a valid regular expression (\(error))")
            }
            return s
        }
        switch kind {
        case "serial":
            self = .serial(pattern: try regex(rest))
        case "tcp":
            self = .tcp(port: try port(Substring(rest)))
        case "http":
            let parts = rest.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false)
            guard parts.count >= 2, parts[1].hasPrefix("/") else {
                throw LifeboatError("launch.bad-check", "acceptance check '\(text)' needs a port and a path starting with '/': \(forms)")
            }
            var status = 200
            if parts.count >= 3 {
                guard let s = Int(parts[2]), (100...599).contains(s) else {
                    throw LifeboatError("launch.bad-check", "acceptance check '\(text)': '\(parts[2])' is not an HTTP status (100-599)")
                }
                status = s
            }
            let pattern = parts.count == 4 ? try regex(String(parts[3])) : nil
            self = .http(port: try port(parts[0]), path: String(parts[1]), status: status, bodyPattern: pattern)
        case "command":
            guard !rest.trimmingSpaces.isEmpty else {
                throw LifeboatError("launch.bad-check", "acceptance check '\(text)' needs a command: \(forms)")
            }
            self = .command(rest)
        default:
            throw LifeboatError("launch.bad-check", "acceptance check '\(text)': unknown kind '\(kind)': \(forms)")
        }
    }

    public var description: String {
        switch self {
        case .serial(let pattern): return "serial:\(pattern)"
        case .tcp(let port): return "tcp:\(port)"
        case .http(let port, let path, let status, let pattern):
            return "http:\(port):\(path):\(status)" + (pattern.map { ":\($0)" } ?? "")
        case .command(let command): return "command:\(command)"
        }
    }

    /// The guest port the check needs to reach, if any (forwarded in user networking).
    public var guestPort: Int? {
        switch self {
        case .tcp(let port), .http(let port, _, _, _): return port
        case .serial, .command: return nil
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(parsing: text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// The network a RECOVERY launch attaches (a TEST launch always gets an isolated one):
/// `user` (QEMU user networking with the check ports forwarded, outbound allowed), `bridge:NAME`,
/// `tap:NAME`, or `none`.
public enum RecoveryNetwork: Sendable, Equatable, Codable, CustomStringConvertible {
    case user
    case bridge(String)
    case tap(String)
    case none

    public init(parsing text: String) throws {
        let usage = "use user, bridge:NAME, tap:NAME or none"
        switch text {
        case "user": self = .user
        case "none": self = .none
        default:
            let parts = text.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, Self.isInterfaceName(parts[1]) else {
                throw LifeboatError("launch.bad-network", "recovery network '\(text)': \(usage) (NAME: 1-15 letters, digits, '-', '_', '.')")
            }
            switch parts[0] {
            case "bridge": self = .bridge(String(parts[1]))
            case "tap": self = .tap(String(parts[1]))
            default: throw LifeboatError("launch.bad-network", "recovery network '\(text)': \(usage)")
            }
        }
    }

    static func isInterfaceName(_ s: Substring) -> Bool {
        !s.isEmpty && s.utf8.count <= 15
            && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic && $0.isASCII || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0) }
    }

    public var description: String {
        switch self {
        case .user: return "user"
        case .bridge(let name): return "bridge:\(name)"
        case .tap(let name): return "tap:\(name)"
        case .none: return "none"
        }
    }

    public init(from decoder: any Decoder) throws {
        try self.init(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// How a machine is launched: which launcher, its size, the recovery network, the acceptance checks.
/// Stored per machine in the catalog (`lifeboat machines configure`); every field has a default.
public struct LaunchSettings: Sendable, Equatable, Codable {
    public enum Launcher: String, Sendable, Codable {
        /// QEMU on this host (KVM when usable, TCG otherwise), disks over NBD.
        case qemu
        /// A configured executable gets a JSON description on stdin (libvirt, Proxmox, OpenStack, a cloud).
        case command
    }

    /// How the command launcher receives disks: NBD URIs (instant) or images exported first.
    public enum DiskDelivery: String, Sendable, Codable {
        case nbd, raw, qcow2
    }

    public var launcher: Launcher = .qemu
    /// The executable of the command launcher.
    public var command: String?
    public var diskDelivery: DiskDelivery = .nbd
    public var vcpus: Int = 1
    public var memoryMiB: Int = 512
    public var recoveryNetwork: RecoveryNetwork = .user
    /// Where the checks reach a RECOVERY instance on a bridge or tap network (its address there).
    public var recoveryAddress: String?
    public var checks: [AcceptanceCheck] = []
    /// How long the checks may take, from the moment the machine starts.
    public var checkTimeoutSeconds: Int = 300
    /// Guest TCP ports to forward to the host besides those the checks use (user networking).
    public var forwardPorts: [Int] = []
    /// Extra QEMU arguments, appended as given.
    public var qemuArguments: [String] = []

    public init() {}

    enum CodingKeys: String, CodingKey {
        case launcher, command, diskDelivery, vcpus, memoryMiB, recoveryNetwork, recoveryAddress, checks, checkTimeoutSeconds,
            forwardPorts, qemuArguments
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LaunchSettings()
        launcher = try c.decodeIfPresent(Launcher.self, forKey: .launcher) ?? d.launcher
        command = try c.decodeIfPresent(String.self, forKey: .command)
        diskDelivery = try c.decodeIfPresent(DiskDelivery.self, forKey: .diskDelivery) ?? d.diskDelivery
        vcpus = try c.decodeIfPresent(Int.self, forKey: .vcpus) ?? d.vcpus
        memoryMiB = try c.decodeIfPresent(Int.self, forKey: .memoryMiB) ?? d.memoryMiB
        recoveryNetwork = try c.decodeIfPresent(RecoveryNetwork.self, forKey: .recoveryNetwork) ?? d.recoveryNetwork
        recoveryAddress = try c.decodeIfPresent(String.self, forKey: .recoveryAddress)
        checks = try c.decodeIfPresent([AcceptanceCheck].self, forKey: .checks) ?? d.checks
        checkTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .checkTimeoutSeconds) ?? d.checkTimeoutSeconds
        forwardPorts = try c.decodeIfPresent([Int].self, forKey: .forwardPorts) ?? d.forwardPorts
        qemuArguments = try c.decodeIfPresent([String].self, forKey: .qemuArguments) ?? d.qemuArguments
        try validate()
    }

    /// - Throws: `launch.bad-settings` for values no launch could use.
    public func validate() throws {
        guard (1...64).contains(vcpus) else {
            throw LifeboatError("launch.bad-settings", "vcpus must be 1 to 64, got \(vcpus)")
        }
        guard (64...1_048_576).contains(memoryMiB) else {
            throw LifeboatError("launch.bad-settings", "memory must be 64 MiB to 1 TiB, got \(memoryMiB) MiB")
        }
        guard (1...86_400).contains(checkTimeoutSeconds) else {
            throw LifeboatError("launch.bad-settings", "the check timeout must be 1 s to 24 h, got \(checkTimeoutSeconds) s")
        }
        for port in forwardPorts where !(1...65535).contains(port) {
            throw LifeboatError("launch.bad-settings", "forwarded port \(port) is not 1-65535")
        }
        if launcher == .command {
            guard let command, command.hasPrefix("/") else {
                throw LifeboatError(
                    "launch.bad-settings",
                    "the command launcher needs the absolute path of its executable: set --launcher-command PATH"
                )
            }
        }
    }

    /// Guest ports reachable from the host: the checks' ports and the configured ones, sorted, once each.
    public var guestPorts: [Int] {
        Array(Set(checks.compactMap(\.guestPort) + forwardPorts)).sorted()
    }
}

extension StringProtocol {
    var trimmingSpaces: Substring {
        let s = self[...]
        guard let first = s.firstIndex(where: { !$0.isWhitespace }) else { return "" }
        let last = s.lastIndex(where: { !$0.isWhitespace })!
        return Substring(s[first...last])
    }
}
