import ChangeTracking
import LifeboatCore
import LifeboatSystem
public import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ReplicationProtocol
import ReplicationTransport
public import ServiceLifecycle
import SystemPackage

/// The source-side service: connects to the replication server, and in cycles captures the machine's volumes
/// (rounds, then a short freeze for a crash-consistent residue), ships the changes and has the trackers forget
/// them only once the server acknowledged the commit. Reconnects with growing delays; never needs a full copy
/// after a restart (the trackers' state persists).
public final class ReplicationAgent: Service, @unchecked Sendable {
    public let state: AgentStateDirectory
    public let identity: AgentIdentity
    public let options: AgentOptions
    let logger: Logger
    let address: ServerAddress
    let sslContext: NIOSSLContext
    let trackers: [(volume: AgentVolume, tracker: ScanTracker)]
    let freezer: Freezer
    let throttle: Throttle
    let pool = NIOThreadPool(numberOfThreads: 2)
    private let lockFile: SystemPackage.FileDescriptor
    private let stopping = LockedValue(false)
    let maxFreeze = LockedValue(Duration.milliseconds(250))
    /// Volume sizes of the last acknowledged commit (a size change needs a commit even without changed blocks).
    let lastSizes = LockedValue<[Int64]>([])
    let compressors = CompressorPool()
    let status = AgentStatusBoard()

    /// What the agent did last, for `agent run --once` and tests.
    public var lastOutcome: CycleOutcome? { status.lastOutcome }

    public init(state: AgentStateDirectory, options: AgentOptions, logger: Logger) throws {
        self.state = state
        self.options = options
        self.logger = logger
        identity = try AgentIdentity.load(state)
        address = try ServerAddress(parsing: identity.server)
        guard !options.volumes.isEmpty else {
            throw LifeboatError("agent.no-volumes", "no volume to replicate: give --volume PATH, or run on a machine with local disks")
        }
        var names = Set<String>()
        for v in options.volumes where !names.insert(v.name).inserted {
            throw LifeboatError("agent.duplicate-volume", "volume name '\(v.name)' is given twice: name them with NAME=PATH")
        }
        lockFile = try SystemCalls.lockExclusively(state.lock, what: "the agent state in \(state.root)")
        do {
            let tls = try TLSSetup.agentConfiguration(
                certificatePEMPath: state.certificate,
                keyPEMPath: state.key,
                caPEMPath: state.ca
            )
            do {
                sslContext = try NIOSSLContext(configuration: tls)
            } catch {
                throw LifeboatError("tls.setup", "cannot set up TLS from \(state.root)", cause: error)
            }
            trackers = try options.volumes.map { volume in
                let tracker = try ScanTracker(
                    volume: volume.name,
                    path: volume.path,
                    stateDirectory: state.trackers,
                    options: ScanTracker.Options(threads: options.scanThreads, maxOutstandingEpochs: 16)
                )
                return (volume, tracker)
            }
            let mounts = try Freezer.mountPoints(onVolumes: options.volumes.map(\.path), excludingPath: state.root)
            freezer = Freezer(mountPoints: mounts, logger: logger)
            if !mounts.isEmpty {
                logger.info("filesystems frozen for consistent points", metadata: ["mounts": "\(mounts.joined(separator: ", "))"])
            }
        } catch {
            try? lockFile.close()
            throw error
        }
        throttle = Throttle(megabitsPerSecond: options.throttleMbps ?? 0)
    }

    deinit { try? lockFile.close() }

    public func run() async throws {
        pool.start()
        defer { Task { [pool] in try? await pool.shutdownGracefully() } }
        try await withGracefulShutdownHandler {
            try await replicate()
        } onGracefulShutdown: {
            self.stopping.value = true
        }
    }

    /// Sessions until done (`--once`) or stopped; a failed session is retried after a growing delay.
    func replicate() async throws {
        var failures = 0
        while !stopping.value {
            do {
                if try await session() { return }
                failures = 0
            } catch let error as LifeboatError where Self.isFatal(error) {
                logger.error("replication stopped", metadata: ["error": "\(error.detailedDescription())"])
                throw error
            } catch {
                let delay = options.reconnectDelays[min(failures, options.reconnectDelays.count - 1)]
                failures += 1
                status.set(.disconnected, reason: "\(Self.describe(error))")
                logger.warning(
                    "replication interrupted; reconnecting",
                    metadata: ["error": "\(Self.describe(error))", "retry-in": "\(delay)"]
                )
                try await sleep(delay)
            }
        }
    }

    /// Errors that no retry can fix: the operator must act.
    static func isFatal(_ error: LifeboatError) -> Bool {
        ["auth.revoked", "auth.unknown-machine", "auth.machine-mismatch", "auth.certificate-required", "protocol.version",
         "tracker.volume-shrank"].contains(error.code.rawValue)
    }

    /// Sleeps, waking early when the agent is stopping.
    func sleep(_ duration: Duration) async throws {
        let deadline = ContinuousClock.now + duration
        while !stopping.value && ContinuousClock.now < deadline {
            try await Task.sleep(for: min(.milliseconds(100), deadline - ContinuousClock.now))
        }
    }

    var isStopping: Bool { stopping.value }

    static func describe(_ error: any Error) -> String {
        if let e = error as? LifeboatError { return "[\(e.code)] \(e.description)" }
        return "\(error)"
    }
}
