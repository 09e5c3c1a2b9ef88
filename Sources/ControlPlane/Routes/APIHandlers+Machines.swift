import Catalog
import Hummingbird
import LifeboatAPI
import LifeboatCore

extension APIHandlers {
    func registerMachines(_ add: Add) {
        add(.get, "/api/v1/machines") { request, _, _ in
            let paging = try Self.paging(request)
            let filter = MachineFilter(
                search: Self.query(request, "search") ?? "",
                application: Self.query(request, "application") ?? "",
                state: Self.query(request, "state")?.uppercased() ?? "",
                includeRemoved: try Self.flag(request, "removed")
            )
            let now = self.now
            let (found, instances, overdue) = try await blocking {
                (
                    try catalog.machinesPage(filter: filter, offset: paging.offset, limit: paging.limit), try catalog.instances(),
                    try catalog.controlSettings().drillOverdueDays
                )
            }
            return try JSONBody.response(
                Page(
                    items: found.machines.map { DTO.machine($0, instances: instances, now: now, overdueDays: overdue) },
                    total: found.total, offset: paging.offset, limit: paging.limit
                )
            )
        }

        add(.get, "/api/v1/machines/{name}") { _, context, _ in
            let name = try Self.parameter(context, "name")
            let (machine, instances, overdue) = try await blocking {
                (try catalog.machine(named: name), try catalog.instances(), try catalog.controlSettings().drillOverdueDays)
            }
            guard let machine else { throw APIError.notFound("machine", name) }
            return try JSONBody.response(DTO.machine(machine, instances: instances, now: now, overdueDays: overdue))
        }

        add(.patch, "/api/v1/machines/{name}") { request, context, _ in
            let name = try Self.parameter(context, "name")
            let update = try await JSONBody.decode(MachineUpdate.self, from: request)
            context.audit.set(target: "machine \(name)", detail: Self.describe(update))
            guard try await blocking({ try catalog.machine(named: name) })?.isActive == true else {
                throw APIError.notFound("machine", name)
            }
            try update.launchSettings?.validate()
            if let throttle = update.throttleMbps, throttle > 100_000 {
                throw APIError(.badRequest, "machine.invalid-setting", "throttleMbps must be 0 (no limit) to 100000, got \(throttle)")
            }
            if let freeze = update.maxFreezeMilliseconds, !(10...60_000).contains(freeze) {
                throw APIError(.badRequest, "machine.invalid-setting", "maxFreezeMilliseconds must be 10 to 60000, got \(freeze)")
            }
            if let application = update.application, !application.isEmpty {
                guard try await blocking({ try catalog.application(named: application) }) != nil else {
                    throw APIError(.notFound, "application.unknown", "there is no application '\(application)': create it first (POST /api/v1/applications)")
                }
            }
            if try Self.isDryRun(request, body: update.dryRun) { return try Self.dryRun("change machine \(name): \(Self.describe(update))") }
            let machine = try await blocking {
                if update.throttleMbps != nil || update.maxFreezeMilliseconds != nil {
                    try catalog.setSettings(machine: name, throttleMbps: update.throttleMbps, maxFreezeMilliseconds: update.maxFreezeMilliseconds)
                }
                if let application = update.application {
                    try catalog.setApplication(machine: name, application.isEmpty ? nil : application)
                }
                if let settings = update.launchSettings {
                    try catalog.setLaunchSettings(machine: name, settings)
                }
                return (try catalog.machine(named: name), try catalog.instances())
            }
            guard let record = machine.0 else { throw APIError.notFound("machine", name) }
            return try JSONBody.response(DTO.machine(record, instances: machine.1, now: now))
        }

        add(.delete, "/api/v1/machines/{name}") { request, context, _ in
            let name = try Self.parameter(context, "name")
            context.audit.set(target: "machine \(name)")
            guard try await blocking({ try catalog.machine(named: name) })?.isActive == true else {
                throw APIError.notFound("machine", name)
            }
            if try Self.isDryRun(request) { return try Self.dryRun("remove machine \(name) and revoke its certificate") }
            try await blocking { try catalog.removeMachine(named: name) }
            return try JSONBody.response(["removed": name])
        }

        for (path, paused) in [("/api/v1/machines/{name}/pause", true), ("/api/v1/machines/{name}/resume", false)] {
            add(.post, path) { request, context, _ in
                let name = try Self.parameter(context, "name")
                context.audit.set(target: "machine \(name)")
                guard try await blocking({ try catalog.machine(named: name) })?.isActive == true else {
                    throw APIError.notFound("machine", name)
                }
                if try Self.isDryRun(request) { return try Self.dryRun("\(paused ? "pause" : "resume") replication of \(name)") }
                let (machine, instances) = try await blocking {
                    try catalog.setPaused(machine: name, paused)
                    return (try catalog.machine(named: name), try catalog.instances())
                }
                guard let machine else { throw APIError.notFound("machine", name) }
                return try JSONBody.response(DTO.machine(machine, instances: instances, now: now))
            }
        }

        add(.get, "/api/v1/machines/{name}/points") { request, context, _ in
            let name = try Self.parameter(context, "name")
            let paging = try Self.paging(request)
            let consistentOnly = try Self.flag(request, "consistent")
            let (machine, points) = try await blocking {
                (try catalog.machine(named: name), try catalog.points(machine: name, limit: Int.max))
            }
            guard machine != nil else { throw APIError.notFound("machine", name) }
            let chosen = consistentOnly ? points.filter(\.consistent) : points
            return try JSONBody.response(Self.page(chosen, paging, DTO.point))
        }

        add(.get, "/api/v1/machines/{name}/volumes") { _, context, _ in
            let name = try Self.parameter(context, "name")
            guard let machine = try await blocking({ try catalog.machine(named: name) }) else {
                throw APIError.notFound("machine", name)
            }
            return try JSONBody.response(machine.volumes.map { VolumeDTO(name: $0.name, size: $0.size) })
        }
    }

    static func describe(_ update: MachineUpdate) -> String {
        var parts: [String] = []
        if let v = update.throttleMbps { parts.append("throttle \(v) Mbit/s") }
        if let v = update.maxFreezeMilliseconds { parts.append("max freeze \(v) ms") }
        if let v = update.application { parts.append(v.isEmpty ? "no application" : "application \(v)") }
        if update.launchSettings != nil { parts.append("launch settings") }
        return parts.joined(separator: ", ")
    }
}

