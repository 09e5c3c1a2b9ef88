import ArgumentParser
import Catalog
import ControlPlane
import ControlPlaneClient
import Foundation
import LifeboatAPI
import LifeboatCore

// `points`, `applications`, `incidents`, `settings`: the incident-response plan, through the API (`points` also
// works on the server host with --data).

struct PointsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "points",
        abstract: "A machine's recovery points, newest first (what `launch --point` takes)."
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "The machine.")
    var machine: String

    @Option(name: .long, help: "How many points to show.")
    var limit = 20

    @Flag(name: .long, help: "Print JSON for scripts.")
    var json = false

    func run() async throws {
        try await runAsync {
            let points: [PointDTO]
            switch try target.resolve() {
            case .remote(let client):
                let page: Page<PointDTO> = try await withClient(client) {
                    try await $0.get("machines/\(segment(machine))/points", query: ["limit": "\(max(1, min(limit, 500)))"])
                }
                points = page.items
            case .local(let data):
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                guard try catalog.machine(named: machine) != nil else {
                    throw LifeboatError("machine.unknown", "there is no machine named \(machine): `lifeboat machines` lists them")
                }
                points = try catalog.points(machine: machine, limit: limit).map(DTO.point)
            }
            if json { return try printJSON(points) }
            printTable(
                ["POINT", "CAPTURED", "CONSISTENT", "CHANGED"],
                points.map { [$0.id, $0.captureTime, $0.consistent ? "yes" : "no", ByteFormatting.binary(Int64($0.changedBytes))] }
            )
        }
    }
}

struct ApplicationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "applications",
        abstract: "Applications: machines launched together, with RPO/RTO objectives against measured values.",
        subcommands: [ApplicationsList.self, ApplicationsCreate.self, ApplicationsSet.self, ApplicationsDelete.self],
        defaultSubcommand: ApplicationsList.self
    )
}

struct ApplicationsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Each application's objectives and what was measured.")

    @OptionGroup var target: TargetOptions

    @Flag(name: .long, help: "Print JSON for scripts.")
    var json = false

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let applications: [ApplicationDTO] = try await withClient(client) { try await $0.get("applications") }
            if json { return try printJSON(applications) }
            func met(_ value: Bool?) -> String { value.map { $0 ? "met" : "MISSED" } ?? "-" }
            printTable(
                ["APPLICATION", "MACHINES", "RPO GOAL", "RPO NOW", "", "RTO GOAL", "LAST DRILL RTO", "", "LAST DRILL"],
                applications.map { a in
                    [
                        a.name, a.machines.joined(separator: ","),
                        a.rpoObjectiveSeconds.map { formatSeconds(Double($0)) } ?? "-", a.measuredRPOSeconds.map(formatSeconds) ?? "-",
                        met(a.rpoMet),
                        a.rtoObjectiveSeconds.map { formatSeconds(Double($0)) } ?? "-", a.measuredRTOSeconds.map(formatSeconds) ?? "-",
                        met(a.rtoMet), a.lastDrillAt ?? "never",
                    ]
                }
            )
        }
    }
}

/// `--rpo 5m`, `--rto 1h` → seconds.
private func objectiveSeconds(_ text: String?) throws -> Int64? {
    try text.map { try parseDuration($0) }
}

struct ApplicationsCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create an application (admin).")

    @OptionGroup var target: TargetOptions
    @Argument(help: "Its name.") var name: String
    @Option(name: .long, help: "What it is.") var description: String?
    @Option(name: .long, help: "The RPO objective (e.g. 30s, 5m).") var rpo: String?
    @Option(name: .long, help: "The RTO objective (e.g. 15m, 1h).") var rto: String?

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let body = NewApplicationRequest(
                name: name, description: description, rpoObjectiveSeconds: try objectiveSeconds(rpo), rtoObjectiveSeconds: try objectiveSeconds(rto)
            )
            let created: ApplicationDTO = try await withClient(client) { try await $0.send(.POST, "applications", body: body) }
            print("created application \(created.name); add machines with: lifeboat machines configure MACHINE --application \(created.name)")
        }
    }
}

struct ApplicationsSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Change an application's description or objectives (admin).")

    @OptionGroup var target: TargetOptions
    @Argument(help: "The application.") var name: String
    @Option(name: .long, help: "What it is.") var description: String?
    @Option(name: .long, help: "The RPO objective (e.g. 30s, 5m).") var rpo: String?
    @Option(name: .long, help: "The RTO objective (e.g. 15m, 1h).") var rto: String?
    @Flag(name: .long, help: "Remove the RPO objective.") var noRpo = false
    @Flag(name: .long, help: "Remove the RTO objective.") var noRto = false

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            var clear: [String] = []
            if noRpo { clear.append("rpoObjectiveSeconds") }
            if noRto { clear.append("rtoObjectiveSeconds") }
            let body = ApplicationUpdateDTO(
                description: description, rpoObjectiveSeconds: try objectiveSeconds(rpo), rtoObjectiveSeconds: try objectiveSeconds(rto),
                clear: clear.isEmpty ? nil : clear
            )
            let updated: ApplicationDTO = try await withClient(client) { try await $0.send(.PATCH, "applications/\(segment(name))", body: body) }
            print("application \(updated.name): RPO goal \(updated.rpoObjectiveSeconds.map { "\($0)s" } ?? "none"), RTO goal \(updated.rtoObjectiveSeconds.map { "\($0)s" } ?? "none")")
        }
    }
}

struct ApplicationsDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete an application without machines (admin).")

    @OptionGroup var target: TargetOptions
    @Argument(help: "The application.") var name: String

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let _: [String: String] = try await withClient(client) { try await $0.call(.DELETE, "applications/\(segment(name))") }
            print("deleted application \(name)")
        }
    }
}

struct IncidentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "incidents",
        abstract: "Incidents: a decider declares one; recovery launches happen under it; it is closed with a summary.",
        subcommands: [IncidentsList.self, IncidentsShow.self, IncidentsDeclare.self, IncidentsClose.self, IncidentsNote.self],
        defaultSubcommand: IncidentsList.self
    )
}

struct IncidentsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Incidents, newest first.")

    @OptionGroup var target: TargetOptions
    @Flag(name: .long, help: "Only open incidents.") var open = false
    @Flag(name: .long, help: "Print JSON for scripts.") var json = false

    func run() async throws {
        try await runAsync {
            let incidents: [IncidentDTO]
            switch try target.resolve() {
            case .remote(let client):
                incidents = try await withClient(client) { try await $0.get("incidents", query: ["status": open ? "OPEN" : nil]) }
            case .local(let data):
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                incidents = try catalog.incidents(status: open ? .open : nil).map(DTO.incident)
            }
            if json { return try printJSON(incidents) }
            printTable(
                ["INCIDENT", "STATUS", "SEVERITY", "DECLARED", "BY", "LAUNCHES", "TITLE"],
                incidents.map { [$0.id, $0.status, $0.severity, $0.declaredAt, $0.declaredBy, "\($0.launches.count)", $0.title] }
            )
        }
    }
}

struct IncidentsShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "One incident with its launches and notes.")

    @OptionGroup var target: TargetOptions
    @Argument(help: "The incident (inc-…).") var id: String
    @Flag(name: .long, help: "Print JSON for scripts.") var json = false

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let i: IncidentDTO = try await withClient(client) { try await $0.get("incidents/\(segment(id))") }
            if json { return try printJSON(i) }
            print("\(i.id)  \(i.status)  \(i.severity)  \(i.title)")
            print("declared \(i.declaredAt) by \(i.declaredBy)" + (i.applications.isEmpty ? "" : "; applications: \(i.applications.joined(separator: ", "))"))
            if let closedAt = i.closedAt { print("closed \(closedAt) by \(i.closedBy ?? "?"): \(i.summary ?? "")") }
            print("launches: \(i.launches.isEmpty ? "none" : i.launches.joined(separator: ", "))")
            for note in i.notes { print("  \(note.time) \(note.kind) \(note.author): \(note.text)") }
        }
    }
}

struct IncidentsDeclare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "declare", abstract: "Declare an incident (decider): recovery launches may follow.")

    @OptionGroup var target: TargetOptions
    @Argument(help: "What happened.") var title: String
    @Option(name: .long, help: "low, medium, high or critical.") var severity = "high"
    @Option(name: .long, help: "An affected application (repeatable).") var application: [String] = []

    func run() async throws {
        try await runAsync {
            let i: IncidentDTO
            switch try target.resolve() {
            case .remote(let client):
                i = try await withClient(client) {
                    try await $0.send(.POST, "incidents", body: NewIncidentRequest(title: title, severity: severity, applications: application))
                }
            case .local(let data):
                guard let level = IncidentSeverity(rawValue: severity.uppercased()) else {
                    throw LifeboatError("incident.invalid", "--severity \(severity): use low, medium, high or critical")
                }
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                let who = localActor()
                i = DTO.incident(try catalog.declareIncident(title: title, severity: level, applications: application, by: who))
                _ = try catalog.appendAudit(
                    actor: who, action: "CLI incidents declare", target: "incident \(i.id)", source: "local", result: "201",
                    detail: "declare \(level.rawValue): \(title)"
                )
            }
            print("declared \(i.id) (\(i.severity)): \(i.title)")
            print("recovery launches may now run under it: lifeboat launch --mode recovery … --incident \(i.id)")
        }
    }
}

struct IncidentsClose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "close", abstract: "Close an incident with a summary (decider).")

    @OptionGroup var target: TargetOptions
    @Argument(help: "The incident (inc-…).") var id: String
    @Option(name: .long, help: "What happened and what was done.") var summary: String

    func run() async throws {
        try await runAsync {
            let i: IncidentDTO
            switch try target.resolve() {
            case .remote(let client):
                i = try await withClient(client) {
                    try await $0.send(.POST, "incidents/\(segment(id))/close", body: CloseIncidentRequest(summary: summary))
                }
            case .local(let data):
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                let who = localActor()
                i = DTO.incident(try catalog.closeIncident(id: id, summary: summary, by: who))
                _ = try catalog.appendAudit(
                    actor: who, action: "CLI incidents close", target: "incident \(id)", source: "local", result: "200", detail: "close"
                )
            }
            print("closed \(i.id); \(i.launches.count) launch(es) were made under it")
        }
    }
}

struct IncidentsNote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "note", abstract: "Add a note or a report to an incident (analyst, decider).")

    @OptionGroup var target: TargetOptions
    @Argument(help: "The incident (inc-…).") var id: String
    @Argument(help: "The text.") var text: String
    @Flag(name: .long, help: "It is a report for decision-makers, not a working note.") var report = false

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let note: IncidentNoteDTO = try await withClient(client) {
                try await $0.send(.POST, "incidents/\(segment(id))/notes", body: NewNoteRequest(kind: report ? "REPORT" : "NOTE", text: text))
            }
            print("added \(note.kind.lowercased()) \(note.id) to \(id)")
        }
    }
}

struct SettingsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settings",
        abstract: "Server-wide settings: incident rule, PIT policy, default launch settings, sessions, login lockout.",
        subcommands: [SettingsShow.self, SettingsSet.self],
        defaultSubcommand: SettingsShow.self
    )
}

struct SettingsShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Print the settings as JSON.")

    @OptionGroup var target: TargetOptions

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let settings: SettingsDTO = try await withClient(client) { try await $0.get("settings") }
            try printJSON(settings)
        }
    }
}

struct SettingsSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Change settings (admin); options not given keep their value.")

    @OptionGroup var target: TargetOptions
    @Option(name: .long, help: "Whether recovery launches need an open incident (true/false).") var requireIncident: Bool?
    @Option(name: .long, help: "Keep every commit younger than this (e.g. 10m).") var keepAll: String?
    @Option(name: .long, help: "A PIT rule UNIT:INTERVAL:RETENTION, e.g. HOUR:1:24 (repeatable; replaces the rules).") var rule: [String] = []
    @Option(name: .long, help: "Days after a passed drill before a machine is TEST_OVERDUE.") var drillOverdueDays: Int?
    @Option(name: .long, help: "Hours a browser session lasts.") var sessionHours: Int?
    @Option(name: .long, help: "Failed logins before a lockout.") var loginFailures: Int?
    @Option(name: .long, help: "Seconds of a lockout.") var lockoutSeconds: Int?
    @Flag(name: .long, help: "Check the change; change nothing.") var dryRun = false

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            try await withClient(client) { client in
                var body = SettingsDTO(
                    requireIncidentForRecovery: requireIncident, drillOverdueDays: drillOverdueDays, sessionHours: sessionHours,
                    loginFailuresBeforeLockout: loginFailures, lockoutSeconds: lockoutSeconds, dryRun: dryRun ? true : nil
                )
                if keepAll != nil || !rule.isEmpty {
                    let current: SettingsDTO = try await client.get("settings")
                    var policy = current.pitPolicy ?? .default
                    if let keepAll { policy.keepEveryCommitFor = try parseDuration(keepAll) }
                    if !rule.isEmpty { policy.rules = try rule.map(parseRule) }
                    body.pitPolicy = policy
                }
                if dryRun {
                    let result: DryRunResult = try await client.send(.PATCH, "settings", body: body)
                    print("would \(result.wouldDo) (dry run)")
                    return
                }
                let updated: SettingsDTO = try await client.send(.PATCH, "settings", body: body)
                try printJSON(updated)
            }
        }
    }
}

/// `HOUR:1:24` → a PIT rule.
func parseRule(_ text: String) throws -> RetentionPolicy.Rule {
    let parts = text.split(separator: ":")
    guard parts.count == 3, let unit = RetentionPolicy.Unit(rawValue: parts[0].uppercased()),
        let interval = Int(parts[1]), let retention = Int(parts[2])
    else {
        throw LifeboatError("cli.bad-rule", "rule '\(text)' must look like HOUR:1:24 (UNIT:INTERVAL:RETENTION)")
    }
    return RetentionPolicy.Rule(unit: unit, interval: interval, retentionDuration: retention)
}
