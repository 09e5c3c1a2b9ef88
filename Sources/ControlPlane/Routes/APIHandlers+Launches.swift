import Catalog
import Hummingbird
import LifeboatAPI
import LifeboatCore
import Recovery

extension APIHandlers {
    func registerLaunches(_ add: Add) {
        add(.post, "/api/v1/launches") { request, context, principal in
            let principal = principal!
            let body = try await JSONBody.decode(LaunchRequestDTO.self, from: request)
            guard let mode = LaunchMode(rawValue: body.mode.uppercased()) else {
                throw APIError(.badRequest, "launch.bad-mode", "mode must be TEST (a drill) or RECOVERY (failover), got '\(body.mode)'")
            }
            context.audit.set(detail: "\(mode.rawValue) launch")
            if mode == .recovery { try Self.require(.launchRecovery, principal) }
            let chosen = [body.machines != nil, body.application != nil, body.all == true].filter { $0 }.count
            guard chosen == 1 else {
                throw APIError(.badRequest, "launch.selection", "give exactly one of machines, application or all: true")
            }
            let selection: LaunchPlanner.Selection =
                if let machines = body.machines { .machines(machines) } else if let application = body.application {
                    .application(application)
                } else { .all }
            let outcome = try await performLaunch(
                mode: mode, selection: selection, global: body.point, perMachine: body.points ?? [:], incident: body.incident,
                user: principal.user, dryRun: try Self.isDryRun(request, body: body.dryRun), audit: context.audit
            )
            guard let job = outcome.job else { return try Self.dryRun(outcome.summary) }
            return try JSONBody.response(DTO.job(job, incident: outcome.incident, requestedBy: principal.user), status: .accepted)
        }

        add(.get, "/api/v1/jobs") { request, _, _ in
            let paging = try Self.paging(request)
            let status = Self.query(request, "status")?.uppercased()
            if let status, JobStatus(rawValue: status) == nil {
                throw APIError(
                    .badRequest, "request.invalid-query",
                    "status must be PENDING, STARTED or COMPLETED, got '\(Self.query(request, "status") ?? "")'"
                )
            }
            let found = try await blocking {
                try catalog.jobsPage(status: status.flatMap(JobStatus.init(rawValue:)), offset: paging.offset, limit: paging.limit)
            }
            return try JSONBody.response(
                Page(
                    items: found.jobs.map { DTO.job($0.job, incident: $0.incident, requestedBy: $0.requestedBy) },
                    total: found.total, offset: paging.offset, limit: paging.limit
                )
            )
        }

        add(.get, "/api/v1/jobs/{id}") { _, context, _ in
            let id = try Self.parameter(context, "id")
            let found = try await blocking { () -> (JobRecord, String?, String?)? in
                guard let job = try catalog.job(id: id) else { return nil }
                let link = try catalog.jobIncident(id)
                return (job, link.incident, link.requestedBy)
            }
            guard let found else { throw APIError.notFound("job", id) }
            return try JSONBody.response(DTO.job(found.0, incident: found.1, requestedBy: found.2))
        }

        add(.get, "/api/v1/jobs/{id}/events") { request, context, _ in
            let id = try Self.parameter(context, "id")
            let after: Int64
            if let text = Self.query(request, "after") {
                guard let value = Int64(text), value >= 0 else {
                    throw APIError(.badRequest, "request.invalid-query", "after must be an event id (a whole number ≥ 0), got '\(text)'")
                }
                after = value
            } else {
                after = 0
            }
            let events = try await blocking { () -> [JobEvent]? in
                guard try catalog.job(id: id) != nil else { return nil }
                return try catalog.jobEvents(job: id, after: after)
            }
            guard let events else { throw APIError.notFound("job", id) }
            return try JSONBody.response(events.map(DTO.event))
        }

        add(.get, "/api/v1/instances") { request, _, _ in
            let all = try Self.flag(request, "all")
            let instances = try await blocking { try catalog.instances(includeTerminated: all) }
            return try JSONBody.response(instances.map(DTO.instance))
        }

        add(.get, "/api/v1/instances/{id}") { _, context, _ in
            let id = try Self.parameter(context, "id")
            guard let instance = try await blocking({ try catalog.instance(id: id) }) else {
                throw APIError.notFound("instance", id)
            }
            return try JSONBody.response(DTO.instance(instance))
        }

        add(.post, "/api/v1/terminations") { request, context, principal in
            let body = try await JSONBody.decode(TerminateRequestDTO.self, from: request)
            guard !body.instances.isEmpty else {
                throw APIError(.badRequest, "terminate.none", "name at least one recovery instance to terminate")
            }
            context.audit.set(target: body.instances.joined(separator: ","), detail: "terminate")
            let catalog = self.catalog
            try await blocking {
                for id in body.instances {
                    guard let instance = try catalog.instance(id: id) else {
                        throw LifeboatError("instance.unknown", "there is no recovery instance \(id): `lifeboat instances` lists them")
                    }
                    guard instance.state.holdsResources else {
                        throw LifeboatError("instance.terminated", "recovery instance \(id) is already \(instance.state.rawValue)")
                    }
                    if [.pending, .launching, .terminating].contains(instance.state) {
                        throw LifeboatError(
                            "instance.busy",
                            "recovery instance \(id) is \(instance.state.rawValue): wait until its job completes, then terminate it"
                        )
                    }
                }
            }
            if try Self.isDryRun(request, body: body.dryRun) {
                return try Self.dryRun("terminate \(body.instances.joined(separator: ", "))")
            }
            let user = principal!.user
            let job = try await blocking { try catalog.createTerminateJob(instances: body.instances, requestedBy: user) }
            context.audit.set(detail: "job \(job.id): terminate")
            return try JSONBody.response(DTO.job(job, incident: nil, requestedBy: user), status: .accepted)
        }
    }
}

struct LaunchOutcome: Sendable {
    /// nil for a dry run.
    var job: JobRecord?
    var incident: String?
    /// What was (or would be) launched, for people and the audit log.
    var summary: String
}

extension APIHandlers {
    /// A launch as the API and the console make it: resolve the machines, their points and the incident (a
    /// recovery needs an open one unless the rule is off; a drill is recorded under one only when it names it),
    /// then queue the job and link it. Nothing changes when any of it fails, or for a dry run.
    func performLaunch(
        mode: LaunchMode, selection: LaunchPlanner.Selection, global: String?, perMachine: [String: String], incident named: String?,
        user: String, dryRun: Bool, audit: AuditNote
    ) async throws -> LaunchOutcome {
        let catalog = self.catalog
        let store = self.store
        let plan = try await blocking { () -> (targets: [LaunchTarget], incident: String?) in
            let settings = try catalog.controlSettings()
            let incident: String? =
                mode == .recovery
                ? try LaunchPlanner.incident(named: named, required: settings.requireIncidentForRecovery, catalog: catalog)
                : try named.flatMap { try LaunchPlanner.incident(named: $0, required: false, catalog: catalog) }
            let names = try LaunchPlanner.machines(selection, catalog: catalog)
            let targets = try LaunchPlanner.targets(machines: names, global: global, perMachine: perMachine, catalog: catalog, store: store)
            return (targets, incident)
        }
        let points = plan.targets.map { "\($0.machine)@\(PointIDText.text($0.point))" }.joined(separator: ", ")
        let summary = "\(mode.rawValue) launch of \(points)" + (plan.incident.map { " under incident \($0)" } ?? "")
        audit.set(target: plan.targets.map(\.machine).joined(separator: ","), detail: summary)
        if dryRun { return LaunchOutcome(job: nil, incident: plan.incident, summary: summary) }
        let job = try await blocking { () -> JobRecord in
            try catalog.createLaunchJob(mode: mode, targets: plan.targets, incident: plan.incident, requestedBy: user)
        }
        audit.set(detail: "job \(job.id): \(summary)")
        metrics.launchRequested(mode: mode)
        return LaunchOutcome(job: job, incident: plan.incident, summary: summary)
    }
}

/// A point's text form without importing the store here.
enum PointIDText {
    static func text(_ raw: UInt64) -> String { DTO.point(raw) ?? "\(raw)" }
}
