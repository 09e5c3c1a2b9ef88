import Agent
import ArgumentParser
import LifeboatCore
import LifeboatSystem
import Logging
import ServiceLifecycle
import UnixSignals
import StagingStore

struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "The agent on a source server: enroll it, then run it (as a systemd service: packaging/).",
        subcommands: [AgentEnroll.self, AgentRun.self]
    )
}

struct StateOptions: ParsableArguments {
    @Option(name: .long, help: "The agent's state directory (key, certificate, change-tracking state).")
    var state: String = "/var/lib/lifeboat-agent"
}

struct AgentEnroll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Enroll this machine with a replication server using a one-time token (the private key stays here)."
    )

    @Option(name: .long, help: "The replication server, HOST:PORT.")
    var server: String

    @Option(name: .long, help: "The token printed by `lifeboat tokens create` (or set LIFEBOAT_TOKEN).")
    var token: String?

    @OptionGroup var state: StateOptions

    @Option(name: .long, help: "The machine's name on the server (default: this host's name).")
    var name: String?

    func run() async throws {
        try await runAsync {
            guard let token = token ?? ProcessEnvironment.value("LIFEBOAT_TOKEN") else {
                throw LifeboatError("cli.no-token", "no token given: use --token TOKEN or set LIFEBOAT_TOKEN")
            }
            let identity = try await AgentEnrollment.enroll(
                server: server,
                token: token,
                machine: name ?? ProcessEnvironment.hostName(),
                state: AgentStateDirectory(root: state.state),
                logger: Logger(label: "lifeboat.agent")
            )
            print("enrolled as \(identity.machine) with \(identity.server) (certificate \(identity.certificateSerial))")
            print("next: lifeboat agent run --state \(state.state)")
        }
    }
}

struct AgentRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Replicate this machine's volumes continuously (or one cycle with --once)."
    )

    @OptionGroup var state: StateOptions

    @Option(name: .long, help: "A block device or image file to replicate, PATH or NAME=PATH (repeatable; default: every local disk).")
    var volume: [String] = []

    @Flag(name: .long, help: "Run one cycle to an acknowledged, crash-consistent commit, then exit.")
    var once = false

    @Option(name: .long, help: "Bandwidth limit in Mbit/s, overriding the server's setting (0 = none).")
    var throttleMbps: UInt32?

    @Option(name: .long, help: "The longest freeze for a consistent point in ms, overriding the server's setting.")
    var maxFreezeMs: UInt32?

    @Option(name: .long, help: "Seconds between the starts of two cycles.")
    var interval: Double = 1

    @Option(name: .long, help: "Wire compression: auto (measure, and compress only when that delivers more bytes per second: a slow or throttled link), always, never.")
    var compress: String = "auto"

    @Flag(name: .long, help: "Send extents uncompressed (the same as --compress never).")
    var noCompress = false

    @Option(name: .long, help: "An initial sync larger than this many MiB lands in commits of this size, so an interrupted one resumes (default 4096).")
    var initialSyncPartMib: Int64 = 4096

    @Option(name: .long, help: "How changes are found: auto (kernel write hints for block devices when bpftrace is available), scan, kernel.")
    var tracker: String = "auto"

    func run() async throws {
        try await runAsync {
            let logger = Logger(label: "lifeboat.agent")
            SystemCalls.tuneAllocatorForBuffers()
            var volumes = try volume.map(AgentVolume.init(parsing:))
            if volumes.isEmpty {
                volumes = try VolumeDiscovery.localDisks().map { AgentVolume(name: $0.name, path: $0.path) }
            }
            var options = AgentOptions(volumes: volumes)
            options.once = once
            options.throttleMbps = throttleMbps
            options.maxFreezeMilliseconds = maxFreezeMs
            options.cycleInterval = .milliseconds(Int64(max(0.05, interval) * 1000))
            guard let compression = WireCompression(rawValue: compress) else {
                throw LifeboatError("cli.bad-compress", "--compress must be auto, always or never, not '\(compress)'")
            }
            options.compression = noCompress ? .never : compression
            guard initialSyncPartMib >= 1, initialSyncPartMib <= 1 << 30 else {
                throw LifeboatError("cli.bad-part", "--initial-sync-part-mib must be between 1 and \(1 << 30), not \(initialSyncPartMib)")
            }
            options.initialSyncPartBytes = initialSyncPartMib << 20
            guard let choice = TrackerChoice(rawValue: tracker) else {
                throw LifeboatError("cli.bad-tracker", "--tracker must be auto, scan or kernel, not '\(tracker)'")
            }
            options.tracker = choice
            let agent = try ReplicationAgent(state: AgentStateDirectory(root: state.state), options: options, logger: logger)
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [.init(service: agent, successTerminationBehavior: .gracefullyShutdownGroup)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger
                )
            )
            try await group.run()
            if once, let outcome = agent.lastOutcome {
                let seconds = Double(outcome.duration.components.seconds) + Double(outcome.duration.components.attoseconds) / 1e18
                print("sequence \(outcome.sequence): \(outcome.kindDescriptionForCLI); cycle \(Int((seconds * 1000).rounded())) ms")
            }
        }
    }
}

extension CycleOutcome {
    var kindDescriptionForCLI: String {
        switch kind {
        case .committed(let point, let consistent):
            "point \(PointID(raw: point)) committed, \(ByteFormatting.binary(changedBytes)) sent, "
                + (consistent
                    ? "crash-consistent (frozen \(frozenFor.map { "\($0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000) ms" } ?? "-"))"
                    : "NOT crash-consistent (\(inconsistencyReason ?? "?"))")
        case .initialSyncPart(let point, let done, let left):
            "initial sync part \(PointID(raw: point)) committed (\(ByteFormatting.binary(done)) durable, \(ByteFormatting.binary(left)) to go)"
        case .unchanged: "nothing changed"
        case .rejected(let code, let message): "rejected: [\(code)] \(message)"
        }
    }
}
