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
    /// Mounted filesystems of the replicated volumes that hold the agent's own state: never frozen, so points
    /// that include them are not crash-consistent.
    let unfreezable: [String]
    let throttle: Throttle
    let pool = NIOThreadPool(numberOfThreads: 2)
    private let lockFile: SystemPackage.FileDescriptor
    private let stopping = LockedValue(false)
    let maxFreeze = LockedValue(Duration.milliseconds(250))
    let keepalive = LockedValue(Duration.seconds(20))
    /// Replication paused by the server's settings.
    let paused = LockedValue(false)
    /// Set when a session reached WELCOME; resets the reconnect delays.
    let established = LockedValue(false)
    /// Volume sizes of the last acknowledged commit (a size change needs a commit even without changed blocks).
    let lastSizes = LockedValue<[Int64]>([])
    let encoders = EncoderPool()
    /// Whether pieces travel compressed: learned across cycles (`CompressionChooser`).
    let compressionChoice: LockedValue<CompressionChooser>
    let status = AgentStatusBoard()

    /// What the agent did last, for `agent run --once` and tests.
    public var lastOutcome: CycleOutcome? { status.lastOutcome }

    public init(state: AgentStateDirectory, options: AgentOptions, logger: Logger) throws {
        self.state = state
        self.options = options
        self.logger = logger
        compressionChoice = LockedValue(CompressionChooser(mode: options.compression))
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
                sslContext = try TLSSetup.makeContext(tls)
            } catch {
                throw LifeboatError("tls.setup", "cannot set up TLS from \(state.root)", cause: error)
            }
            trackers = try options.volumes.map { volume in
                let tracker = try ScanTracker(
                    volume: volume.name,
                    path: volume.path,
                    stateDirectory: state.trackers,
                    options: ScanTracker.Options(threads: options.scanThreads, maxOutstandingEpochs: 16),
                    hints: try Self.hints(for: volume, choice: options.tracker, logger: logger)
                )
                return (volume, tracker)
            }
            let mounts = try Freezer.mountPoints(onVolumes: options.volumes.map(\.path), excludingPath: state.root)
            let all = try Freezer.mountPoints(onVolumes: options.volumes.map(\.path), excludingPath: "/nonexistent/\(UInt64.random(in: 0...UInt64.max))")
            unfreezable = all.filter { !mounts.contains($0) }
            if !unfreezable.isEmpty {
                logger.warning(
                    "the filesystem holding the agent's state is on a replicated volume and cannot be frozen: points are not crash-consistent; move --state to another filesystem",
                    metadata: ["mounts": "\(unfreezable.joined(separator: ", "))"]
                )
            }
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

    /// Kernel write hints for a block device, as `choice` asks; nil means scanning.
    static func hints(for volume: AgentVolume, choice: TrackerChoice, logger: Logger) throws -> BPFTraceHints? {
        guard choice != .scan else { return nil }
        let isBlockDevice = (try? VolumeDiscovery.describe(path: volume.path)).map { _ in
            (try? BPFTraceHints.locate(volume.path)) != nil
        } ?? false
        guard isBlockDevice, BPFTraceHints.isAvailable else {
            if choice == .kernel {
                throw LifeboatError(
                    "agent.no-kernel-hints",
                    "kernel write hints need a block device, root and bpftrace (apt-get install bpftrace): \(volume.path)"
                )
            }
            return nil
        }
        do {
            return try BPFTraceHints(devicePath: volume.path, logger: logger)
        } catch {
            if choice == .kernel { throw error }
            logger.warning(
                "kernel write hints unavailable; scanning the whole volume every cycle",
                metadata: ["volume": "\(volume.name)", "error": "\(error)"]
            )
            return nil
        }
    }

    public func run() async throws {
        pool.start()
        defer {
            for entry in trackers { (entry.tracker.hints as? BPFTraceHints)?.stop() }
            Task { [pool] in try? await pool.shutdownGracefully() }
        }
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
                // A session that got as far as WELCOME was a success: start the delays over.
                if established.value {
                    established.value = false
                    failures = 0
                }
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
         "tracker.volume-shrank", "agent.no-consistent-point", "agent.paused"].contains(error.code.rawValue)
    }

    /// Sleeps, waking early when the agent is stopping; with a session, pings the server at the keepalive
    /// interval so that an idle agent is not taken for a dead one.
    func sleep(_ duration: Duration, channel: SessionChannel? = nil) async throws {
        let deadline = ContinuousClock.now + duration
        var nextPing = ContinuousClock.now + keepalive.value
        while !stopping.value && ContinuousClock.now < deadline {
            try await Task.sleep(for: min(.milliseconds(100), deadline - ContinuousClock.now))
            if let channel, ContinuousClock.now >= nextPing {
                try await channel.outbound.write(.ping(nonce: UInt64.random(in: 0...UInt64.max)))
                nextPing = ContinuousClock.now + keepalive.value
            }
        }
    }

    var isStopping: Bool { stopping.value }

    static func describe(_ error: any Error) -> String {
        if let e = error as? LifeboatError { return "[\(e.code)] \(e.description)" }
        return "\(error)"
    }
}
