import ArgumentParser
import Catalog
import ControlPlaneClient
import LifeboatAPI
import LifeboatCore

struct MachinesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "machines",
        abstract: "Protected machines: replication state, lag, backlog; pause, resume, remove one; change its settings.",
        subcommands: [
            MachinesList.self, MachinesPause.self, MachinesResume.self, MachinesRemove.self, MachinesSet.self,
            MachinesConfigure.self,
        ],
        defaultSubcommand: MachinesList.self
    )
}

struct MachinesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Show every machine's replication state.")

    @OptionGroup var target: TargetOptions

    @Option(name: .long, help: "Only machines whose name or application contains this text.")
    var search: String?

    @Option(name: .long, help: "Only machines of this application.")
    var application: String?

    @Flag(name: .long, help: "Print JSON for scripts.")
    var json = false

    @Flag(name: .long, help: "Include removed machines.")
    var all = false

    func run() async throws {
        try await runAsync {
            switch try target.resolve() {
            case .remote(let client): try await withClient(client) { try await remote($0) }
            case .local(let data): try local(data)
            }
        }
    }

    func remote(_ client: APIClient) async throws {
        let machines = try await fetchAll(
            client, "machines", query: ["removed": all ? "true" : nil, "search": search, "application": application], as: MachineDTO.self
        )
        if json {
            try printJSON(machines)
            return
        }
        let rows = machines.map { m -> [String] in
            var state = m.state
            if m.paused && m.state != "PAUSED" && m.state != "REMOVED" { state += " (pause requested)" }
            if m.state == "INITIAL_SYNC", let p = m.initialSyncPercent { state += " \(Int(p))%" }
            if let test = m.runningInstances.first(where: { $0.mode == "TEST" }) { state += " [drill \(test.id)]" }
            return [
                m.name, state, m.lagSeconds.map(formatSeconds) ?? "-", ByteFormatting.binary(Int64(m.backlogBytes)),
                m.etaSeconds.map(formatSeconds) ?? "-", m.lastConsistentCaptureTime ?? "-",
                m.drLifecycle + (m.lastDrillPassedAt.map { " (\(String($0.prefix(10))))" } ?? ""), m.stateReason ?? "",
            ]
        }
        printTable(["MACHINE", "STATE", "LAG", "BACKLOG", "ETA", "LAST POINT", "DR LIFECYCLE", "WHY"], rows)
    }

    func local(_ data: DataOptions) throws {
        do {
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            let now = Timestamp.now()
            let overdue = try catalog.controlSettings().drillOverdueDays
            let machines = try catalog.machines(includeRemoved: all).filter { m in
                if let search, !m.name.contains(search), !(m.application?.contains(search) ?? false) { return false }
                if let application, m.application != application { return false }
                return true
            }
            if json {
                print("[" + machines.map { machineJSON($0, now: now, overdueDays: overdue) }.joined(separator: ",\n ") + "]")
                return
            }
            let rows = machines.map { m -> [String] in
                var state = m.removedAt == nil ? m.state : "REMOVED"
                if m.paused && m.removedAt == nil && m.state != "PAUSED" { state += " (pause requested)" }
                if m.state == "INITIAL_SYNC", let p = m.initialSyncPercent { state += " \(Int(p))%" }
                return [
                    m.name,
                    state,
                    m.lagSeconds(now: now).map(formatSeconds) ?? "-",
                    ByteFormatting.binary(Int64(m.backlogBytes)),
                    m.etaSeconds.map(formatSeconds) ?? "-",
                    m.lastConsistentCaptureTime.map { "\($0)" } ?? "-",
                    lifecycleText(m, now: now, overdueDays: overdue),
                    m.stateReason ?? "",
                ]
            }
            printTable(["MACHINE", "STATE", "LAG", "BACKLOG", "ETA", "LAST POINT", "DR LIFECYCLE", "WHY"], rows)
        }
    }

    func machineJSON(_ m: MachineRecord, now: Timestamp, overdueDays: Int) -> String {
        func num(_ v: Double?) -> String { v.map { "\(($0 * 1000).rounded() / 1000)" } ?? "null" }
        func str(_ v: String?) -> String { v.map(jsonString) ?? "null" }
        let volumes = m.volumes.map { "{\"name\":\(jsonString($0.name)),\"size\":\($0.size)}" }.joined(separator: ",")
        return "{"
            + "\"name\":\(jsonString(m.name)),"
            + "\"state\":\(jsonString(m.removedAt == nil ? m.state : "REMOVED")),"
            + "\"stateReason\":\(str(m.stateReason)),"
            + "\"connected\":\(m.connected),"
            + "\"lagSeconds\":\(num(m.lagSeconds(now: now))),"
            + "\"initialSyncPercent\":\(num(m.initialSyncPercent)),"
            + "\"backlogBytes\":\(m.backlogBytes),"
            + "\"etaSeconds\":\(num(m.etaSeconds)),"
            + "\"lastPoint\":\(m.lastPoint.map { "\($0)" } ?? "null"),"
            + "\"lastSequence\":\(m.lastSequence.map { "\($0)" } ?? "null"),"
            + "\"lastConsistentCaptureTime\":\(str(m.lastConsistentCaptureTime?.description)),"
            + "\"lastSeen\":\(str(m.lastSeen?.description)),"
            + "\"agentVersion\":\(str(m.agentVersion)),"
            + "\"certificateSerial\":\(jsonString(m.certificateSerial)),"
            + "\"throttleMbps\":\(m.throttleMbps),"
            + "\"maxFreezeMilliseconds\":\(m.maxFreezeMilliseconds),"
            + "\"paused\":\(m.paused),"
            + "\"application\":\(str(m.application)),"
            + "\"drLifecycle\":\(jsonString(m.effectiveLifecycle(now: now, overdueDays: overdueDays).rawValue)),"
            + "\"lastDrillAt\":\(str(m.lastDrillAt?.description)),"
            + "\"lastDrillPassedAt\":\(str(m.lastDrillPassedAt?.description)),"
            + "\"launchSettings\":\((try? LaunchSettingsCoding.encode(m.launchSettings)) ?? "null"),"
            + "\"volumes\":[\(volumes)]"
            + "}"
    }
}

/// `TESTED_RECENTLY (2026-11-30)`, `TEST_FAILED (2026-11-30)`, `NOT_TESTED`.
func lifecycleText(_ m: MachineRecord, now: Timestamp, overdueDays: Int) -> String {
    let state = m.effectiveLifecycle(now: now, overdueDays: overdueDays)
    switch state {
    case .testedRecently, .testOverdue:
        return state.rawValue + (m.lastDrillPassedAt.map { " (\(String($0.rfc3339.prefix(10))))" } ?? "")
    case .testFailed:
        return state.rawValue + (m.lastDrillAt.map { " (\(String($0.rfc3339.prefix(10))))" } ?? "")
    case .notTested, .recoveryLaunched:
        return state.rawValue
    }
}

func formatSeconds(_ s: Double) -> String {
    if s < 60 { return "\(Int(s.rounded()))s" }
    if s < 3600 { return "\(Int(s / 60))m\(Int(s.truncatingRemainder(dividingBy: 60)))s" }
    return "\(Int(s / 3600))h\(Int(s.truncatingRemainder(dividingBy: 3600) / 60))m"
}

struct MachinesPause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause",
        abstract: "Pause a machine's replication: its agent stays connected and sends nothing (state PAUSED) until resumed."
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "The machine's name.")
    var machine: String

    func run() async throws {
        try await setPaused(true, machine: machine, target: target)
        print("replication of \(machine) paused: a connected agent stops after its current commit; resume with 'lifeboat machines resume \(machine)'")
    }
}

struct MachinesResume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Resume a paused machine's replication (its changes since the pause follow; no full resync)."
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "The machine's name.")
    var machine: String

    func run() async throws {
        try await setPaused(false, machine: machine, target: target)
        print("replication of \(machine) resumed")
    }
}

/// Records the pause or resume in the catalog (the server tells a connected agent within a second) and as an event.
private func setPaused(_ paused: Bool, machine: String, target: TargetOptions) async throws {
    try await runAsync {
        guard case .local(let data) = try target.resolve() else {
            let client = try target.remote()
            let _: MachineDTO = try await withClient(client) {
                try await $0.call(.POST, "machines/\(segment(machine))/\(paused ? "pause" : "resume")")
            }
            return
        }
        let catalog = try data.openCatalog()
        defer { catalog.close() }
        try catalog.setPaused(machine: machine, paused)
        try catalog.recordEvent(
            machine: machine,
            kind: paused ? "PAUSED" : "RESUMED",
            detail: "replication \(paused ? "paused" : "resumed") by an operator"
        )
    }
}

struct MachinesRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Stop protecting a machine: revoke its certificate (its recovery points stay until pruned)."
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "The machine's name.")
    var machine: String

    func run() async throws {
        try await runAsync {
            guard case .local(let data) = try target.resolve() else {
                let client = try target.remote()
                let _: [String: String] = try await withClient(client) { try await $0.call(.DELETE, "machines/\(segment(machine))") }
                print("removed \(machine); its certificate is revoked and its agent can no longer connect")
                return
            }
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            try catalog.removeMachine(named: machine)
            try catalog.recordEvent(machine: machine, kind: "REMOVED", detail: "certificate revoked")
            print("removed \(machine); its certificate is revoked and its agent can no longer connect")
        }
    }
}

struct MachinesSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Change a machine's replication settings (a connected agent gets them within seconds)."
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "The machine's name.")
    var machine: String

    @Option(name: .long, help: "Bandwidth limit in Mbit/s (0 = none).")
    var throttleMbps: UInt32?

    @Option(name: .long, help: "The longest freeze for a consistent point, in milliseconds.")
    var maxFreezeMs: UInt32?

    func run() async throws {
        try await runAsync {
            guard case .local(let data) = try target.resolve() else {
                let client = try target.remote()
                let _: MachineDTO = try await withClient(client) {
                    try await $0.send(
                        .PATCH, "machines/\(segment(machine))", body: MachineUpdate(throttleMbps: throttleMbps, maxFreezeMilliseconds: maxFreezeMs)
                    )
                }
                print("settings of \(machine) updated")
                return
            }
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            try catalog.setSettings(machine: machine, throttleMbps: throttleMbps, maxFreezeMilliseconds: maxFreezeMs)
            print("settings of \(machine) updated")
        }
    }
}


struct MachinesConfigure: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "configure",
        abstract: "Set how a machine is launched: launcher, size, recovery network, acceptance checks, application.",
        discussion: """
            Acceptance checks (repeatable --check): serial:REGEX (a console line), tcp:PORT, \
            http:PORT:PATH[:STATUS[:REGEX]] (GET answers STATUS, body matches REGEX), command:SHELL (exits 0; gets \
            LIFEBOAT_HOST, LIFEBOAT_PORT_<guest port>, LIFEBOAT_CONSOLE, LIFEBOAT_INSTANCE). A machine counts as \
            launched only when all pass within --check-timeout. Options not given keep their value.
            """
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "The machine's name.")
    var machine: String

    @Option(name: .long, help: "Put the machine in this application (launched together with --application).")
    var application: String?

    @Flag(name: .long, help: "Take the machine out of its application.")
    var noApplication = false

    @Option(name: .long, help: "qemu (this host) or command (your executable gets a JSON description on stdin).")
    var launcher: String?

    @Option(name: .long, help: "The command launcher's executable (absolute path).")
    var launcherCommand: String?

    @Option(name: .long, help: "How the command launcher gets disks: nbd (instant), raw or qcow2 (exported first).")
    var diskDelivery: String?

    @Option(name: .long, help: "Virtual CPUs.")
    var vcpus: Int?

    @Option(name: .long, help: "Memory in MiB.")
    var memory: Int?

    @Option(name: .long, help: "The network of a RECOVERY launch: user, bridge:NAME, tap:NAME or none (TEST is always isolated).")
    var recoveryNetwork: String?

    @Option(name: .long, help: "The machine's address on a bridge or tap recovery network (where checks reach it).")
    var recoveryAddress: String?

    @Option(name: .long, help: "An acceptance check (repeatable; replaces the configured ones).")
    var check: [String] = []

    @Flag(name: .long, help: "Remove every acceptance check.")
    var clearChecks = false

    @Option(name: .long, help: "Seconds the checks may take from the machine's start.")
    var checkTimeout: Int?

    @Option(name: .long, help: "A guest TCP port to forward to the host besides the checks' ports (repeatable; replaces).")
    var forwardPort: [Int] = []

    @Option(name: .long, parsing: .unconditionalSingleValue, help: "An extra QEMU argument (repeatable; replaces the configured ones).")
    var qemuArg: [String] = []

    @Flag(name: .long, help: "Print the resulting settings as JSON.")
    var json = false

    func run() async throws {
        try await runAsync {
            guard case .local(let data) = try target.resolve() else {
                let client = try target.remote()
                try await withClient(client) { client in
                    let record: MachineDTO = try await client.get("machines/\(segment(machine))")
                    let settings = try apply(to: record.launchSettings)
                    if application != nil && noApplication {
                        throw LifeboatError("cli.usage", "give --application NAME or --no-application, not both")
                    }
                    let updated: MachineDTO = try await client.send(
                        .PATCH, "machines/\(segment(machine))",
                        body: MachineUpdate(application: noApplication ? "" : application, launchSettings: settings)
                    )
                    let text = try LaunchSettingsCoding.encode(updated.launchSettings)
                    print(json ? text : "launch settings of \(machine): \(text)")
                }
                return
            }
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            guard let record = try catalog.machine(named: machine), record.isActive else {
                throw LifeboatError("machine.unknown", "there is no machine named \(machine): `lifeboat machines` lists them")
            }
            let settings = try apply(to: record.launchSettings)
            if application != nil && noApplication {
                throw LifeboatError("cli.usage", "give --application NAME or --no-application, not both")
            }
            // Validate everything before changing anything.
            try settings.validate()
            if let application { try Names.validate(application, kind: "application") }
            try catalog.setLaunchSettings(machine: machine, settings)
            if let application { try catalog.setApplication(machine: machine, application) }
            if noApplication { try catalog.setApplication(machine: machine, nil) }
            let text = try LaunchSettingsCoding.encode(settings)
            if json {
                print(text)
            } else {
                print("launch settings of \(machine): \(text)")
            }
        }
    }

    /// The machine's launch settings with the options given applied.
    func apply(to current: LaunchSettings) throws -> LaunchSettings {
        var settings = current
        if let launcher {
            guard let kind = LaunchSettings.Launcher(rawValue: launcher) else {
                throw LifeboatError("cli.usage", "--launcher \(launcher): use qemu or command")
            }
            settings.launcher = kind
        }
        if let launcherCommand { settings.command = launcherCommand }
        if let diskDelivery {
            guard let delivery = LaunchSettings.DiskDelivery(rawValue: diskDelivery) else {
                throw LifeboatError("cli.usage", "--disk-delivery \(diskDelivery): use nbd, raw or qcow2")
            }
            settings.diskDelivery = delivery
        }
        if let vcpus { settings.vcpus = vcpus }
        if let memory { settings.memoryMiB = memory }
        if let recoveryNetwork { settings.recoveryNetwork = try RecoveryNetwork(parsing: recoveryNetwork) }
        if let recoveryAddress { settings.recoveryAddress = recoveryAddress }
        if clearChecks { settings.checks = [] }
        if !check.isEmpty { settings.checks = try check.map(AcceptanceCheck.init(parsing:)) }
        if let checkTimeout { settings.checkTimeoutSeconds = checkTimeout }
        if !forwardPort.isEmpty { settings.forwardPorts = forwardPort }
        if !qemuArg.isEmpty { settings.qemuArguments = qemuArg }
        return settings
    }
}
