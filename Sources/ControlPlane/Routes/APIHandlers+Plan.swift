import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore

extension APIHandlers {
    func registerPlan(_ add: Add) {
        add(.get, "/api/v1/applications") { _, _, _ in
            let now = self.now
            let (applications, objectives) = try await blocking { (try catalog.applications(), try catalog.objectives(now: now)) }
            return try JSONBody.response(
                applications.map { a in DTO.application(a, objective: objectives.first { $0.application == a.name }) }
            )
        }

        add(.post, "/api/v1/applications") { request, context, _ in
            let body = try await JSONBody.decode(NewApplicationRequest.self, from: request)
            context.audit.set(target: "application \(body.name)")
            try Self.validateObjectives(body.rpoObjectiveSeconds, body.rtoObjectiveSeconds)
            if try await blocking({ try catalog.application(named: body.name) }) != nil {
                throw APIError(.conflict, "application.exists", "an application named '\(body.name)' exists already")
            }
            try Names.validate(body.name, kind: "application")
            if try Self.isDryRun(request, body: body.dryRun) { return try Self.dryRun("create application \(body.name)") }
            let created = try await blocking {
                try catalog.createApplication(
                    name: body.name,
                    description: body.description ?? "",
                    rpoSeconds: body.rpoObjectiveSeconds,
                    rtoSeconds: body.rtoObjectiveSeconds
                )
            }
            return try JSONBody.response(DTO.application(created, objective: nil), status: .created)
        }

        add(.get, "/api/v1/applications/{name}") { _, context, _ in
            let name = try Self.parameter(context, "name")
            let now = self.now
            let (application, objectives) = try await blocking { (try catalog.application(named: name), try catalog.objectives(now: now)) }
            guard let application else { throw APIError.notFound("application", name) }
            return try JSONBody.response(DTO.application(application, objective: objectives.first { $0.application == name }))
        }

        add(.patch, "/api/v1/applications/{name}") { request, context, _ in
            let name = try Self.parameter(context, "name")
            let body = try await JSONBody.decode(ApplicationUpdateDTO.self, from: request)
            context.audit.set(target: "application \(name)")
            try Self.validateObjectives(body.rpoObjectiveSeconds, body.rtoObjectiveSeconds)
            try body.launchSettings?.validate()
            let clear = Set(body.clear ?? [])
            let clearable: Set<String> = ["rpoObjectiveSeconds", "rtoObjectiveSeconds", "launchSettings"]
            if let bad = clear.subtracting(clearable).first {
                throw APIError(.badRequest, "request.invalid-field", "clear: '\(bad)' cannot be cleared (only \(clearable.sorted().joined(separator: ", ")))")
            }
            guard try await blocking({ try catalog.application(named: name) }) != nil else {
                throw APIError.notFound("application", name)
            }
            if try Self.isDryRun(request, body: body.dryRun) { return try Self.dryRun("change application \(name)") }
            func change<T>(_ field: String, _ value: T?) -> FieldChange<T> {
                if clear.contains(field) { return .clear }
                return value.map { .set($0) } ?? .keep
            }
            let rpo = change("rpoObjectiveSeconds", body.rpoObjectiveSeconds)
            let rto = change("rtoObjectiveSeconds", body.rtoObjectiveSeconds)
            let settings = change("launchSettings", body.launchSettings)
            let now = self.now
            let (updated, objectives) = try await blocking {
                (
                    try catalog.updateApplication(
                        name: name, description: body.description, rpoSeconds: rpo, rtoSeconds: rto, launchSettings: settings
                    ),
                    try catalog.objectives(now: now)
                )
            }
            return try JSONBody.response(DTO.application(updated, objective: objectives.first { $0.application == name }))
        }

        add(.delete, "/api/v1/applications/{name}") { request, context, _ in
            let name = try Self.parameter(context, "name")
            context.audit.set(target: "application \(name)")
            guard let application = try await blocking({ try catalog.application(named: name) }) else {
                throw APIError.notFound("application", name)
            }
            guard application.machines.isEmpty else {
                throw APIError(
                    .conflict,
                    "application.in-use",
                    "application \(name) still has machines (\(application.machines.joined(separator: ", "))): move them out first"
                )
            }
            if try Self.isDryRun(request) { return try Self.dryRun("delete application \(name)") }
            try await blocking { try catalog.deleteApplication(name) }
            return try JSONBody.response(["deleted": name])
        }

        add(.get, "/api/v1/incidents") { request, _, _ in
            let status: IncidentStatus?
            if let text = Self.query(request, "status") {
                guard let value = IncidentStatus(rawValue: text.uppercased()) else {
                    throw APIError(.badRequest, "request.invalid-query", "status must be OPEN or CLOSED, got '\(text)'")
                }
                status = value
            } else {
                status = nil
            }
            let incidents = try await blocking { try catalog.incidents(status: status) }
            return try JSONBody.response(incidents.map(DTO.incident))
        }

        add(.post, "/api/v1/incidents") { request, context, principal in
            let body = try await JSONBody.decode(NewIncidentRequest.self, from: request)
            guard let severity = IncidentSeverity(rawValue: body.severity.uppercased()) else {
                throw APIError(
                    .badRequest,
                    "incident.invalid",
                    "severity must be one of \(IncidentSeverity.allCases.map(\.rawValue).joined(separator: ", ")), got '\(body.severity)'"
                )
            }
            guard !body.title.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw APIError(.badRequest, "incident.invalid", "an incident needs a title that says what happened")
            }
            let applications = body.applications ?? []
            for application in applications where try await blocking({ try catalog.application(named: application) }) == nil {
                throw APIError(.notFound, "application.unknown", "there is no application '\(application)'")
            }
            context.audit.set(detail: "declare \(severity.rawValue): \(body.title)")
            if try Self.isDryRun(request, body: body.dryRun) { return try Self.dryRun("declare incident '\(body.title)'") }
            let user = principal!.user
            let incident = try await blocking {
                try catalog.declareIncident(title: body.title, severity: severity, applications: applications, by: user)
            }
            context.audit.set(target: "incident \(incident.id)")
            return try JSONBody.response(DTO.incident(incident), status: .created)
        }

        add(.get, "/api/v1/incidents/{id}") { _, context, _ in
            let id = try Self.parameter(context, "id")
            guard let incident = try await blocking({ try catalog.incident(id: id) }) else { throw APIError.notFound("incident", id) }
            return try JSONBody.response(DTO.incident(incident))
        }

        add(.post, "/api/v1/incidents/{id}/close") { request, context, principal in
            let id = try Self.parameter(context, "id")
            let body = try await JSONBody.decode(CloseIncidentRequest.self, from: request)
            context.audit.set(target: "incident \(id)", detail: "close")
            guard let incident = try await blocking({ try catalog.incident(id: id) }) else { throw APIError.notFound("incident", id) }
            guard incident.status == .open else {
                throw APIError(.conflict, "incident.closed", "incident \(id) is closed already")
            }
            guard !body.summary.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw APIError(.badRequest, "incident.invalid", "closing an incident needs a summary of what happened and what was done")
            }
            if try Self.isDryRun(request, body: body.dryRun) { return try Self.dryRun("close incident \(id)") }
            let user = principal!.user
            let closed = try await blocking { try catalog.closeIncident(id: id, summary: body.summary, by: user) }
            return try JSONBody.response(DTO.incident(closed))
        }

        add(.post, "/api/v1/incidents/{id}/notes") { request, context, principal in
            let id = try Self.parameter(context, "id")
            let body = try await JSONBody.decode(NewNoteRequest.self, from: request)
            let kind = (body.kind ?? "NOTE").uppercased()
            guard kind == "NOTE" || kind == "REPORT" else {
                throw APIError(.badRequest, "incident.invalid", "a note's kind is NOTE or REPORT, got '\(body.kind ?? "")'")
            }
            guard !body.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw APIError(.badRequest, "incident.invalid", "the note is empty")
            }
            context.audit.set(target: "incident \(id)", detail: kind)
            guard try await blocking({ try catalog.incident(id: id) }) != nil else { throw APIError.notFound("incident", id) }
            if try Self.isDryRun(request, body: body.dryRun) { return try Self.dryRun("add a \(kind) to incident \(id)") }
            let user = principal!.user
            let note = try await blocking { try catalog.addIncidentNote(incident: id, author: user, kind: kind, text: body.text) }
            return try JSONBody.response(
                IncidentNoteDTO(id: note.id, time: note.time.rfc3339, author: note.author, kind: note.kind, text: note.text),
                status: .created
            )
        }

        add(.get, "/api/v1/settings") { _, _, _ in
            try JSONBody.response(DTO.settings(try await blocking { try catalog.controlSettings() }))
        }

        add(.patch, "/api/v1/settings") { request, context, _ in
            let body = try await JSONBody.decode(SettingsDTO.self, from: request)
            var settings = try await blocking { try catalog.controlSettings() }
            var changed: [String] = []
            if let v = body.requireIncidentForRecovery { settings.requireIncidentForRecovery = v; changed.append("requireIncidentForRecovery=\(v)") }
            if let v = body.pitPolicy { settings.pitPolicy = v; changed.append("pitPolicy") }
            if let v = body.defaultLaunchSettings { settings.defaultLaunchSettings = v; changed.append("defaultLaunchSettings") }
            if let v = body.drillOverdueDays { settings.drillOverdueDays = v; changed.append("drillOverdueDays=\(v)") }
            if let v = body.sessionHours { settings.sessionHours = v; changed.append("sessionHours=\(v)") }
            if let v = body.loginFailuresBeforeLockout { settings.loginFailuresBeforeLockout = v; changed.append("loginFailuresBeforeLockout=\(v)") }
            if let v = body.lockoutSeconds { settings.lockoutSeconds = v; changed.append("lockoutSeconds=\(v)") }
            context.audit.set(target: "settings", detail: changed.joined(separator: ", "))
            try settings.pitPolicy.validate()
            try settings.defaultLaunchSettings?.validate()
            if try Self.isDryRun(request, body: body.dryRun) {
                try settings.validate()
                return try Self.dryRun("change settings: \(changed.joined(separator: ", "))")
            }
            let stored = settings
            try await blocking { try catalog.setControlSettings(stored) }
            return try JSONBody.response(DTO.settings(stored))
        }
    }

    static func validateObjectives(_ rpo: Int64?, _ rto: Int64?) throws {
        for (name, value) in [("rpoObjectiveSeconds", rpo), ("rtoObjectiveSeconds", rto)] {
            if let value, !(1...31_536_000).contains(value) {
                throw APIError(.badRequest, "application.invalid-objective", "\(name) must be 1 s to 1 year, got \(value)")
            }
        }
    }
}
