import ArgumentParser
import Catalog
import LifeboatCore

struct MachinesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "machines",
        abstract: "Protected machines: replication state, lag, backlog; pause, resume, remove one; change its settings.",
        subcommands: [MachinesList.self, MachinesPause.self, MachinesResume.self, MachinesRemove.self, MachinesSet.self],
        defaultSubcommand: MachinesList.self
    )
}

struct MachinesList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Show every machine's replication state.")

    @OptionGroup var data: DataOptions

    @Flag(name: .long, help: "Print JSON for scripts.")
    var json = false

    @Flag(name: .long, help: "Include removed machines.")
    var all = false

    func run() throws {
        try lifeboat.run {
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            let machines = try catalog.machines(includeRemoved: all)
            let now = Timestamp.now()
            if json {
                print("[" + machines.map { machineJSON($0, now: now) }.joined(separator: ",\n ") + "]")
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
                    m.stateReason ?? "",
                ]
            }
            printTable(["MACHINE", "STATE", "LAG", "BACKLOG", "ETA", "LAST POINT", "WHY"], rows)
        }
    }

    func machineJSON(_ m: MachineRecord, now: Timestamp) -> String {
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
            + "\"volumes\":[\(volumes)]"
            + "}"
    }
}

func formatSeconds(_ s: Double) -> String {
    if s < 60 { return "\(Int(s.rounded()))s" }
    if s < 3600 { return "\(Int(s / 60))m\(Int(s.truncatingRemainder(dividingBy: 60)))s" }
    return "\(Int(s / 3600))h\(Int(s.truncatingRemainder(dividingBy: 3600) / 60))m"
}

struct MachinesPause: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause",
        abstract: "Pause a machine's replication: its agent stays connected and sends nothing (state PAUSED) until resumed."
    )

    @OptionGroup var data: DataOptions

    @Argument(help: "The machine's name.")
    var machine: String

    func run() throws {
        try setPaused(true, machine: machine, data: data)
        print("replication of \(machine) paused: a connected agent stops after its current commit; resume with 'lifeboat machines resume \(machine)'")
    }
}

struct MachinesResume: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Resume a paused machine's replication (its changes since the pause follow; no full resync)."
    )

    @OptionGroup var data: DataOptions

    @Argument(help: "The machine's name.")
    var machine: String

    func run() throws {
        try setPaused(false, machine: machine, data: data)
        print("replication of \(machine) resumed")
    }
}

/// Records the pause or resume in the catalog (the server tells a connected agent within a second) and as an event.
private func setPaused(_ paused: Bool, machine: String, data: DataOptions) throws {
    try lifeboat.run {
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

struct MachinesRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Stop protecting a machine: revoke its certificate (its recovery points stay until pruned)."
    )

    @OptionGroup var data: DataOptions

    @Argument(help: "The machine's name.")
    var machine: String

    func run() throws {
        try lifeboat.run {
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            try catalog.removeMachine(named: machine)
            try catalog.recordEvent(machine: machine, kind: "REMOVED", detail: "certificate revoked")
            print("removed \(machine); its certificate is revoked and its agent can no longer connect")
        }
    }
}

struct MachinesSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Change a machine's replication settings (a connected agent gets them within seconds)."
    )

    @OptionGroup var data: DataOptions

    @Argument(help: "The machine's name.")
    var machine: String

    @Option(name: .long, help: "Bandwidth limit in Mbit/s (0 = none).")
    var throttleMbps: UInt32?

    @Option(name: .long, help: "The longest freeze for a consistent point, in milliseconds.")
    var maxFreezeMs: UInt32?

    func run() throws {
        try lifeboat.run {
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            try catalog.setSettings(machine: machine, throttleMbps: throttleMbps, maxFreezeMilliseconds: maxFreezeMs)
            print("settings of \(machine) updated")
        }
    }
}
