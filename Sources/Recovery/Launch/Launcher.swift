import Foundation
public import LifeboatCore
import NIOPosix

/// One disk of a machine to launch: an NBD URI of its copy-on-write overlay, or an image exported first.
public struct LaunchDisk: Sendable, Codable, Equatable {
    public var volume: String
    public var size: Int64
    /// `nbd://HOST:PORT/EXPORT`, nil when the disk was delivered as an image.
    public var nbdURI: String?
    public var nbdHost: String?
    public var nbdPort: Int?
    public var nbdExport: String?
    /// The exported image (`raw` or `qcow2`), for launchers that cannot read NBD.
    public var imagePath: String?
    public var imageFormat: String?
    /// A directory with `ca-cert.pem` when the NBD server requires TLS (QEMU's `tls-creds-x509`).
    public var nbdTLSDirectory: String?

    public init(volume: String, size: Int64) {
        self.volume = volume
        self.size = size
    }
}

/// Everything a launcher needs to start one recovery instance.
public struct LaunchRequest: Sendable {
    public var instance: String
    public var job: String
    public var machine: String
    public var mode: LaunchMode
    public var point: UInt64
    public var pointCaptureTime: Timestamp
    /// In boot order: the first disk boots.
    public var disks: [LaunchDisk]
    public var settings: LaunchSettings
    /// The instance's own directory (console log, launcher output, overlays).
    public var directory: String

    public init(
        instance: String,
        job: String,
        machine: String,
        mode: LaunchMode,
        point: UInt64,
        pointCaptureTime: Timestamp,
        disks: [LaunchDisk],
        settings: LaunchSettings,
        directory: String
    ) {
        self.instance = instance
        self.job = job
        self.machine = machine
        self.mode = mode
        self.point = point
        self.pointCaptureTime = pointCaptureTime
        self.disks = disks
        self.settings = settings
        self.directory = directory
    }
}

/// What a launcher reports about a started machine and needs later to check and stop it. Stored as JSON in the
/// catalog (`recovery_instances.runtime`), so a restarted server can still reach and terminate it.
public struct InstanceRuntime: Sendable, Codable, Equatable {
    public var launcher: String
    /// The machine's process on this host (QEMU), if any.
    public var pid: Int32?
    /// A string in the process's command line that proves `pid` is still this instance's process.
    public var processMarker: String?
    /// The serial console, when the launcher captures it.
    public var consoleLog: String?
    /// Where the checks reach the machine's ports.
    public var host: String?
    /// Guest TCP port → port on `host` (forwarded ports); a port not listed is reached as is.
    public var ports: [Int: Int]
    /// The accelerator QEMU uses (`kvm` or `tcg`).
    public var accelerator: String?
    /// The command launcher's own description of what it started (its JSON answer), handed back on terminate.
    public var launcherData: String?
    /// The disks handed to the launcher.
    public var disks: [LaunchDisk]

    public init(launcher: String) {
        self.launcher = launcher
        self.ports = [:]
        self.disks = []
    }

    /// The host port for a guest port.
    public func hostPort(for guestPort: Int) -> Int { ports[guestPort] ?? guestPort }

    /// The stored form (`recovery_instances.runtime`): JSON with sorted keys.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    public init(json text: String) throws {
        self = try JSONDecoder().decode(InstanceRuntime.self, from: Data(text.utf8))
    }
}

/// Starts and stops recovery machines: QEMU on this host, or any platform through a command.
public protocol Launcher: Sendable {
    /// `qemu`, `command`.
    var kind: String { get }

    /// Starts the machine. Returns once it was started (not once it works: the acceptance checks prove that).
    /// Lines for the job log go to `log`.
    func launch(_ request: LaunchRequest, log: @escaping @Sendable (String) -> Void) async throws -> InstanceRuntime

    /// Whether the machine still runs (nil: the launcher cannot tell).
    func isRunning(_ runtime: InstanceRuntime) -> Bool?

    /// Stops the machine and frees what the launcher holds for it. Idempotent: stopping a stopped machine succeeds.
    func terminate(_ runtime: InstanceRuntime, request: LaunchRequest, log: @escaping @Sendable (String) -> Void) async throws
}

/// Threads for the launch work that blocks for long: launcher commands (minutes), image conversions, check
/// commands, stopping machines. Separate from NIO's small shared pool so that a failover of many machines does not
/// queue one machine's checks behind another's launcher until their deadlines pass.
enum LaunchThreads {
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 32)
        pool.start()
        return pool
    }()
}
