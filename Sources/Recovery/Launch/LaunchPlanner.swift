public import Catalog
import LifeboatCore
public import StagingStore

/// Turns "launch these machines from these points" into launch targets before any job exists, so that a wrong
/// machine, application or point changes nothing. Shared by the command line and the REST API.
public enum LaunchPlanner {
    /// Which machines a launch is for.
    public enum Selection: Sendable, Equatable {
        case machines([String])
        case application(String)
        case all
    }

    /// The active machines of a selection, in a stable order.
    ///
    /// - Throws: `machine.unknown`, `application.unknown` (an application without machines), `launch.no-machines`.
    public static func machines(_ selection: Selection, catalog: Catalog) throws -> [String] {
        switch selection {
        case .machines(let names):
            guard !names.isEmpty else {
                throw LifeboatError("launch.no-machines", "name at least one machine to launch")
            }
            var seen = Set<String>()
            for name in names {
                guard try catalog.machine(named: name)?.isActive == true else {
                    throw LifeboatError("machine.unknown", "there is no machine named \(name): `lifeboat machines` lists them")
                }
                guard seen.insert(name).inserted else {
                    throw LifeboatError("launch.duplicate-machine", "machine \(name) is named twice: name each machine once")
                }
            }
            return names
        case .application(let application):
            guard try catalog.application(named: application) != nil else {
                throw LifeboatError("application.unknown", "there is no application \(application): `lifeboat applications` lists them")
            }
            let names = try catalog.machines(application: application).map(\.name)
            guard !names.isEmpty else {
                throw LifeboatError(
                    "application.empty",
                    "application \(application) has no machines: assign some with `lifeboat machines configure NAME --application \(application)`"
                )
            }
            return names
        case .all:
            let names = try catalog.machines().map(\.name)
            guard !names.isEmpty else { throw LifeboatError("launch.nothing-protected", "no machine is protected yet") }
            return names
        }
    }

    /// Splits `--point` values: one for every machine and `MACHINE=POINT` for one.
    ///
    /// - Throws: `launch.bad-point` for a machine that is not launched or a global point given twice.
    public static func parsePoints(_ texts: [String], machines: [String]) throws -> (global: String?, perMachine: [String: String]) {
        var global: String?
        var perMachine: [String: String] = [:]
        for text in texts {
            if let eq = text.firstIndex(of: "="), machines.contains(String(text[..<eq])) {
                perMachine[String(text[..<eq])] = String(text[text.index(after: eq)...])
            } else if text.contains("=") {
                throw LifeboatError(
                    "launch.bad-point",
                    "point \(text): \(text.split(separator: "=")[0]) is not one of the machines launched"
                )
            } else {
                guard global == nil else {
                    throw LifeboatError("launch.bad-point", "a point for every machine is given twice: give it once, or as MACHINE=POINT")
                }
                global = text
            }
        }
        return (global, perMachine)
    }

    /// Each machine with the point it launches from: `latest` unless `perMachine` or `global` says otherwise;
    /// a point is an id or an RFC 3339 time (the newest crash-consistent point at or before it).
    ///
    /// - Throws: `launch.no-point` for a machine without any point yet; the store's errors for a bad point.
    public static func targets(
        machines: [String],
        global: String?,
        perMachine: [String: String],
        catalog: Catalog,
        store: Store
    ) throws -> [LaunchTarget] {
        for name in perMachine.keys where !machines.contains(name) {
            throw LifeboatError("launch.bad-point", "a point is given for \(name), which is not one of the machines launched")
        }
        return try machines.map { name in
            let text = perMachine[name] ?? global ?? "latest"
            guard !store.commits(machine: name).isEmpty else {
                let state = (try? catalog.machine(named: name))??.state ?? "unknown"
                throw LifeboatError(
                    "launch.no-point",
                    "machine \(name) has no recovery point yet (replication state \(state)): wait for its initial sync to finish"
                )
            }
            let commit = try store.resolvePoint(text, machine: name)
            return LaunchTarget(machine: name, point: commit.id.raw, pointCaptureTime: commit.time)
        }
    }

    /// The open incident a recovery launch is made under, or nil when none is needed and none is named.
    ///
    /// - Parameters:
    ///   - named: the incident the caller named, if any.
    ///   - required: whether recovery launches need an open incident (the `requireIncidentForRecovery` setting).
    /// - Throws: `launch.incident-required` when none is open and one is required; `incident.unknown`,
    ///   `incident.closed` for a named one that cannot be used; `launch.incident-ambiguous` when several are open.
    public static func incident(named: String?, required: Bool, catalog: Catalog) throws -> String? {
        if let named {
            guard let incident = try catalog.incident(id: named) else {
                throw LifeboatError("incident.unknown", "there is no incident \(named): `lifeboat incidents` lists them")
            }
            guard incident.status == .open else {
                throw LifeboatError("incident.closed", "incident \(named) is closed: recovery launches need an open incident")
            }
            return named
        }
        let open = try catalog.openIncidents()
        switch open.count {
        case 0:
            guard required else { return nil }
            throw LifeboatError(
                "launch.incident-required",
                "Recovery mode needs an open incident: a decider declares one (`lifeboat incidents declare`), then launch again — or launch in Test mode for a drill"
            )
        case 1:
            return open[0].id
        default:
            throw LifeboatError(
                "launch.incident-ambiguous",
                "\(open.count) incidents are open (\(open.map(\.id).joined(separator: ", "))): name the one this recovery belongs to"
            )
        }
    }
}
