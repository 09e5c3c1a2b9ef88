#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import ArgumentParser
import Catalog
import ControlPlaneClient
import Foundation
import LifeboatAPI
import LifeboatCore
import Recovery
import ReplicationServer
import StagingStore

// `launch`, `jobs`, `instances`, `export`: they work on the server's data directory (`--data DIR`) on the server
// host; the running server (`lifeboat server run`) performs the jobs they queue.

extension DataOptions {
    /// The staging store, read-only (the server may be writing it).
    func openStoreForReading() throws -> Store {
        let layout = try self.layout
        return try Store.open(LocalDirectoryBackend(root: layout.store), key: .keyFile(path: layout.storeKey), access: .read)
    }
}

struct LaunchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "launch",
        abstract: "Launch recovery machines from a recovery point: a drill (--mode test) or a recovery (--mode recovery).",
        discussion: """
            The server (`lifeboat server run`) performs the job: it pins each point, serves the volumes over NBD \
            through copy-on-write overlays (nothing is copied), starts the machines and runs their acceptance \
            checks. --point applies to every machine; --point MACHINE=POINT to one. A point is `latest`, an id \
            or an RFC 3339 time (the newest crash-consistent point at or before it).
            """
    )

    @OptionGroup var target: TargetOptions

    @Option(name: .long, help: "test (a drill on an isolated network) or recovery (failover onto the recovery network).")
    var mode: String

    var launchMode: LaunchMode {
        get throws {
            guard let mode = LaunchMode(rawValue: self.mode.uppercased()) else {
                throw LifeboatError("cli.usage", "--mode \(self.mode): use test (a drill) or recovery (failover)")
            }
            return mode
        }
    }

    @Option(name: .long, help: "latest, a point id, an RFC 3339 time, or MACHINE=POINT (repeatable).")
    var point: [String] = []

    @Option(name: .long, help: "Launch every machine of this application.")
    var application: String?

    @Flag(name: .long, help: "Launch every protected machine.")
    var all = false

    @Flag(name: .long, help: "Wait for the job to complete, showing its log; exit 1 unless every machine launched.")
    var wait = false

    @Flag(name: .long, help: "Print the job as JSON (after it completes with --wait).")
    var json = false

    @Option(name: .long, help: "The open incident a recovery launch belongs to (default: the only open one).")
    var incident: String?

    @Flag(name: .long, help: "Check that the launch would be accepted (machines, points, permissions, incident); launch nothing.")
    var dryRun = false

    @Argument(help: "The machines to launch.")
    var machines: [String] = []

    func validate() throws {
        let chosen = (machines.isEmpty ? 0 : 1) + (application == nil ? 0 : 1) + (all ? 1 : 0)
        guard chosen == 1 else {
            throw ValidationError("name the machines, or give --application NAME, or --all (exactly one of them)")
        }
        guard LaunchMode(rawValue: mode.uppercased()) != nil else {
            throw ValidationError("--mode \(mode): use test (a drill) or recovery (failover)")
        }
    }

    var selection: LaunchPlanner.Selection {
        if let application { return .application(application) }
        if all { return .all }
        return .machines(machines)
    }

    func run() async throws {
        try await runAsync {
            switch try target.resolve() {
            case .remote(let client): try await withClient(client) { try await remote($0) }
            case .local(let data): try await local(data)
            }
        }
    }

    func remote(_ client: APIClient) async throws {
        let mode = try launchMode
        let names = machines
        let (global, perMachine) = try LaunchPlanner.parsePoints(point, machines: names)
        let request = LaunchRequestDTO(
            mode: mode.rawValue,
            machines: names.isEmpty ? nil : names,
            application: application,
            all: all ? true : nil,
            point: global,
            points: perMachine.isEmpty ? nil : perMachine,
            incident: incident,
            dryRun: dryRun ? true : nil
        )
        if dryRun {
            let result: DryRunResult = try await client.send(.POST, "launches", body: request)
            print("would \(result.wouldDo) (dry run: nothing launched)")
            return
        }
        let job: JobDTO = try await client.send(.POST, "launches", body: request)
        if !wait {
            if json {
                try printJSON(job)
            } else {
                print("job \(job.id) queued: \(mode.rawValue) launch of \(job.items.map(\.machine).joined(separator: ", "))" + (job.incident.map { " under incident \($0)" } ?? ""))
                for item in job.items {
                    print("  \(item.machine) from point \(item.point ?? "?") (\(item.pointCaptureTime ?? "?")) → instance \(item.instance)")
                }
                print("follow it with: lifeboat jobs \(job.id) --follow")
            }
            return
        }
        let finished = try await RemoteJobFollower(client: client, job: job.id, quiet: json).follow()
        if json { try printJSON(finished) } else { RemoteJobText.summary(finished) }
        if finished.items.contains(where: { $0.launchStatus != "LAUNCHED" }) { throw ExitCode(1) }
    }

    func local(_ data: DataOptions) async throws {
        let catalog = try data.openCatalog()
        defer { catalog.close() }
        let mode = try launchMode
        let names = try LaunchPlanner.machines(selection, catalog: catalog)
        let (global, perMachine) = try LaunchPlanner.parsePoints(point, machines: names)
        let store = try data.openStoreForReading()
        let targets: [LaunchTarget]
        do {
            defer { store.close() }
            targets = try LaunchPlanner.targets(machines: names, global: global, perMachine: perMachine, catalog: catalog, store: store)
        }
        let underIncident =
            mode == .recovery
            ? try LaunchPlanner.incident(named: incident, required: try catalog.controlSettings().requireIncidentForRecovery, catalog: catalog)
            : try incident.flatMap { try LaunchPlanner.incident(named: $0, required: false, catalog: catalog) }
        let who = "local:" + (ProcessEnvironment.value("SUDO_USER") ?? ProcessEnvironment.value("USER") ?? "root")
        if dryRun {
            print("would \(mode.rawValue) launch \(targets.map { "\($0.machine)@\(PointID(raw: $0.point))" }.joined(separator: ", "))" + (underIncident.map { " under incident \($0)" } ?? "") + " (dry run: nothing launched)")
            return
        }
        let job = try catalog.createLaunchJob(mode: mode, targets: targets, incident: underIncident, requestedBy: who)
        try catalog.appendAudit(
            actor: who, action: "CLI launch", target: names.joined(separator: ","), source: "local",
            result: "202", detail: "job \(job.id): \(mode.rawValue) launch" + (underIncident.map { " under \($0)" } ?? "")
        )
        if !wait {
            if json {
                print(JobJSON.text(job, events: []))
            } else {
                print("job \(job.id) queued: \(mode.rawValue) launch of \(names.joined(separator: ", "))" + (underIncident.map { " under incident \($0)" } ?? ""))
                for item in job.items {
                    print("  \(item.machine) from point \(item.point.map { "\(PointID(raw: $0))" } ?? "?") (\(item.pointCaptureTime.map { "\($0)" } ?? "?")) → instance \(item.instance)")
                }
                print("follow it with: lifeboat jobs \(job.id) --follow --data \(try data.directory())")
            }
            return
        }
        let finished = try await JobFollower(catalog: catalog, job: job.id, quiet: json).follow()
        if json {
            print(JobJSON.text(finished, events: try catalog.jobEvents(job: job.id)))
        } else {
            JobText.summary(finished)
        }
        if finished.items.contains(where: { $0.launchStatus != .launched }) { throw ExitCode(1) }
    }
}

/// Prints a job's log as it grows until the job completes.
struct JobFollower {
    let catalog: Catalog
    let job: String
    var quiet = false

    func follow() async throws -> JobRecord {
        var last: Int64 = 0
        let started = ContinuousClock.now
        var hinted = false
        while true {
            for event in try catalog.jobEvents(job: job, after: last) {
                last = event.id
                if !quiet { print(JobText.line(event)) }
            }
            guard let record = try catalog.job(id: job) else {
                throw LifeboatError("job.unknown", "job \(job) disappeared from the catalog")
            }
            if record.status == .completed {
                for event in try catalog.jobEvents(job: job, after: last) where !quiet { print(JobText.line(event)) }
                return record
            }
            if record.status == .pending && !hinted && ContinuousClock.now - started > .seconds(10) {
                printError("job \(job) is still PENDING: is `lifeboat server run` running on this data directory?")
                hinted = true
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

enum JobText {
    static func line(_ e: JobEvent) -> String {
        var text = "\(e.time)  \(e.kind.padding(toLength: 16, withPad: " ", startingAt: 0)) "
        if let machine = e.machine { text += "\(machine): " }
        text += e.detail
        if let error = e.error { text += " — error: \(error)" }
        return terminalSafe(text)
    }

    static func summary(_ job: JobRecord) {
        print("job \(job.id) \(job.status.rawValue)")
        printTable(
            ["MACHINE", "INSTANCE", "POINT", "STATUS", "RTO", "ERROR"],
            job.items.map { item in
                [
                    item.machine, item.instance, item.point.map { "\(PointID(raw: $0))" } ?? "-", item.launchStatus.rawValue,
                    item.rtoSeconds.map { String(format: "%.1fs", $0) } ?? "-", item.error ?? "",
                ]
            }
        )
    }
}

enum JobJSON {
    static func object(_ job: JobRecord, events: [JobEvent]?) -> [String: Any] {
        var object: [String: Any] = [
            "id": job.id, "type": job.type.rawValue, "initiatedBy": job.initiatedBy.rawValue,
            "mode": job.mode?.rawValue ?? NSNull(), "status": job.status.rawValue,
            "createdAt": job.createdAt.rfc3339, "startedAt": job.startedAt?.rfc3339 ?? NSNull(),
            "endedAt": job.endedAt?.rfc3339 ?? NSNull(),
            "items": job.items.map { item -> [String: Any] in
                [
                    "machine": item.machine, "instance": item.instance,
                    "point": item.point.map { "\(PointID(raw: $0))" } ?? NSNull(),
                    "pointCaptureTime": item.pointCaptureTime?.rfc3339 ?? NSNull(),
                    "launchStatus": item.launchStatus.rawValue,
                    "rtoSeconds": item.rtoSeconds ?? NSNull(), "error": item.error ?? NSNull(),
                ]
            },
        ]
        if let events {
            object["events"] = events.map { e -> [String: Any] in
                [
                    "id": e.id, "time": e.time.rfc3339, "kind": e.kind, "machine": e.machine ?? NSNull(),
                    "instance": e.instance ?? NSNull(), "detail": e.detail, "error": e.error ?? NSNull(),
                ]
            }
        }
        return object
    }

    static func text(_ job: JobRecord, events: [JobEvent]?) -> String {
        render(object(job, events: events))
    }
}

func render(_ object: Any) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("null".utf8)
    return String(decoding: data, as: UTF8.self)
}

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs",
        abstract: "Launch and terminate jobs: the recent ones, or one job with its log (--follow to watch it)."
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "A job id: show its machines and its log.")
    var id: String?

    @Flag(name: .long, help: "Keep printing the job's log until it completes.")
    var follow = false

    @Flag(name: .long, help: "Print JSON for scripts.")
    var json = false

    @Option(name: .long, help: "How many recent jobs to list.")
    var limit = 20

    func run() async throws {
        try await runAsync {
            switch try target.resolve() {
            case .remote(let client): try await withClient(client) { try await remote($0) }
            case .local(let data): try await local(data)
            }
        }
    }

    func remote(_ client: APIClient) async throws {
        guard let id else {
            if follow { throw LifeboatError("cli.usage", "--follow needs a job id") }
            let page: Page<JobDTO> = try await client.get("jobs", query: ["limit": "\(max(1, min(limit, 500)))"])
            if json {
                try printJSON(page.items)
                return
            }
            printTable(
                ["JOB", "TYPE", "MODE", "STATUS", "CREATED", "BY", "MACHINES"],
                page.items.map { job in
                    [
                        job.id, job.type, job.mode ?? "-", job.status, job.createdAt, job.requestedBy ?? "-",
                        job.items.map { "\($0.machine):\($0.launchStatus)" }.joined(separator: " "),
                    ]
                }
            )
            return
        }
        if follow {
            let finished = try await RemoteJobFollower(client: client, job: id, quiet: json).follow()
            if json { try printJSON(finished) } else { RemoteJobText.summary(finished) }
            return
        }
        let job: JobDTO = try await client.get("jobs/\(segment(id))")
        let events: [JobEventDTO] = try await client.get("jobs/\(segment(id))/events")
        if json {
            try printJSON(RemoteJobText.WithEvents(job: job, events: events))
            return
        }
        RemoteJobText.summary(job)
        print("")
        for event in events { print(RemoteJobText.line(event)) }
    }

    func local(_ data: DataOptions) async throws {
        do {
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            guard let id else {
                if follow { throw LifeboatError("cli.usage", "--follow needs a job id") }
                let jobs = try catalog.jobs(limit: limit)
                if json {
                    print(render(jobs.map { JobJSON.object($0, events: nil) }))
                    return
                }
                printTable(
                    ["JOB", "TYPE", "MODE", "STATUS", "CREATED", "MACHINES"],
                    jobs.map { job in
                        [
                            job.id, job.type.rawValue, job.mode?.rawValue ?? "-", job.status.rawValue, "\(job.createdAt)",
                            job.items.map { "\($0.machine):\($0.launchStatus.rawValue)" }.joined(separator: " "),
                        ]
                    }
                )
                return
            }
            guard try catalog.job(id: id) != nil else {
                throw LifeboatError("job.unknown", "there is no job \(id): `lifeboat jobs` lists the recent ones")
            }
            if follow {
                let finished = try await JobFollower(catalog: catalog, job: id, quiet: json).follow()
                if json { print(JobJSON.text(finished, events: try catalog.jobEvents(job: id))) } else { JobText.summary(finished) }
                return
            }
            let job = try catalog.job(id: id)!
            let events = try catalog.jobEvents(job: id)
            if json {
                print(JobJSON.text(job, events: events))
                return
            }
            JobText.summary(job)
            print("")
            for event in events { print(JobText.line(event)) }
        }
    }
}

struct InstancesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instances",
        abstract: "Recovery instances: list them, terminate them.",
        subcommands: [InstancesList.self, InstancesTerminate.self],
        defaultSubcommand: InstancesList.self
    )
}

struct InstancesList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Show the recovery instances.")

    @OptionGroup var target: TargetOptions

    @Flag(name: .long, help: "Include terminated and failed instances.")
    var all = false

    @Flag(name: .long, help: "Print JSON for scripts.")
    var json = false

    func run() async throws {
        try await runAsync {
            guard case .local(let data) = try target.resolve() else {
                let client = try target.remote()
                let instances: [InstanceDTO] = try await withClient(client) {
                    try await $0.get("instances", query: ["all": all ? "true" : nil])
                }
                if json {
                    try printJSON(instances)
                    return
                }
                printTable(
                    ["INSTANCE", "MACHINE", "MODE", "POINT", "STATE", "LAUNCHED", "ACCESS", "WHY"],
                    instances.map { i in
                        [i.id, i.machine, i.mode, i.point, i.state, i.launchedAt ?? "-", i.address ?? "-", i.stateReason ?? ""]
                    }
                )
                return
            }
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            let instances = try catalog.instances(includeTerminated: all)
            if json {
                print(render(instances.map(InstanceJSON.object)))
                return
            }
            printTable(
                ["INSTANCE", "MACHINE", "MODE", "POINT", "STATE", "LAUNCHED", "ACCESS", "WHY"],
                instances.map { i in
                    [
                        i.id, i.machine, i.mode.rawValue, "\(PointID(raw: i.point))", i.state.rawValue,
                        i.launchedAt.map { "\($0)" } ?? "-", InstanceJSON.access(i), i.stateReason ?? "",
                    ]
                }
            )
        }
    }
}

enum InstanceJSON {
    static func runtime(_ i: InstanceRecord) -> InstanceRuntime? { i.runtime.flatMap { try? InstanceRuntime(json: $0) } }

    /// `127.0.0.1:34567→80 …` from the runtime's host and port map.
    static func access(_ i: InstanceRecord) -> String {
        guard let runtime = runtime(i), let host = runtime.host else { return "-" }
        let parts = runtime.ports.sorted { $0.key < $1.key }.map { "\(host):\($0.value)→\($0.key)" }
        return parts.isEmpty ? host : parts.joined(separator: " ")
    }

    static func object(_ i: InstanceRecord) -> [String: Any] {
        let runtime = runtime(i)
        return [
            "id": i.id, "machine": i.machine, "job": i.job, "mode": i.mode.rawValue, "point": "\(PointID(raw: i.point))",
            "pointCaptureTime": i.pointCaptureTime.rfc3339, "state": i.state.rawValue, "stateReason": i.stateReason ?? NSNull(),
            "launcher": i.launcher, "host": runtime?.host ?? NSNull(),
            "ports": Dictionary(uniqueKeysWithValues: (runtime?.ports ?? [:]).map { ("\($0.key)", $0.value) }),
            "consoleLog": runtime?.consoleLog ?? NSNull(),
            "createdAt": i.createdAt.rfc3339, "launchedAt": i.launchedAt?.rfc3339 ?? NSNull(),
            "terminatedAt": i.terminatedAt?.rfc3339 ?? NSNull(),
        ]
    }
}

struct InstancesTerminate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "terminate",
        abstract: "Terminate recovery instances: stop the machine, drop its overlay (its writes), unpin its point."
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "Instance ids.")
    var ids: [String]

    @Flag(name: .long, help: "Queue the job and return without waiting.")
    var noWait = false

    func run() async throws {
        try await runAsync {
            guard case .local(let data) = try target.resolve() else {
                let client = try target.remote()
                try await withClient(client) { client in
                    let job: JobDTO = try await client.send(.POST, "terminations", body: TerminateRequestDTO(instances: ids))
                    if noWait {
                        print("job \(job.id) queued: terminate \(ids.joined(separator: ", "))")
                        return
                    }
                    let finished = try await RemoteJobFollower(client: client, job: job.id).follow()
                    RemoteJobText.summary(finished)
                    if finished.items.contains(where: { $0.launchStatus != "TERMINATED" }) { throw ExitCode(1) }
                }
                return
            }
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            let job = try catalog.createTerminateJob(instances: ids, requestedBy: localActor())
            try catalog.appendAudit(
                actor: localActor(), action: "CLI instances terminate", target: ids.joined(separator: ","), source: "local",
                result: "202", detail: "job \(job.id): terminate"
            )
            if noWait {
                print("job \(job.id) queued: terminate \(ids.joined(separator: ", "))")
                return
            }
            let finished = try await JobFollower(catalog: catalog, job: job.id).follow()
            JobText.summary(finished)
            if finished.items.contains(where: { $0.launchStatus != .terminated }) { throw ExitCode(1) }
        }
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a machine's volume at a recovery point to a raw file or a qcow2 image."
    )
    @OptionGroup var data: DataOptions

    @Argument(help: "The machine.")
    var machine: String

    @Option(name: .long, help: "The volume (needed when the machine has several).")
    var volume: String?

    @Option(name: .long, help: "latest, a point id, or an RFC 3339 time.")
    var point = "latest"

    @Option(name: .long, help: "raw (sparse) or qcow2.")
    var format: StoreExport.Format = .raw

    @Option(name: .shortAndLong, help: "The file to write (replaced).")
    var output: String

    func run() throws {
        try lifeboat.run {
            let store = try data.openStoreForReading()
            defer { store.close() }
            let commit = try store.resolvePoint(point, machine: machine)
            let names = commit.volumes.map(\.name).sorted()
            let chosen: String
            if let volume {
                guard names.contains(volume) else {
                    throw LifeboatError("export.no-volume", "machine \(machine) has no volume \(volume) at point \(commit.id): it has \(names.joined(separator: ", "))")
                }
                chosen = volume
            } else {
                guard names.count == 1 else {
                    throw LifeboatError("export.which-volume", "machine \(machine) has \(names.count) volumes (\(names.joined(separator: ", "))): choose one with --volume")
                }
                chosen = names[0]
            }
            let reader = try store.reader(machine: machine, volume: chosen, point: "\(commit.id)")
            try exportVolume(store, reader, machine: machine, volume: chosen, format: format, output: output)
        }
    }
}
