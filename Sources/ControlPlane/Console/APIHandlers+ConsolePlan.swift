import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import NIOCore

extension APIHandlers {
    private func csrfField(_ principal: Principal) -> String {
        "<input type=\"hidden\" name=\"csrf\" value=\"\(HTML.escape(principal.csrf ?? ""))\">"
    }

    @Sendable func applicationsPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let now = self.now
        let (applications, objectives) = try await blocking { (try catalog.applications(), try catalog.objectives(now: now)) }
        func goal(_ seconds: Int64?) -> String { seconds.map { HTML.duration(Double($0)) } ?? "–" }
        func measured(_ value: Double?, _ met: Bool?) -> String {
            guard let value else { return "<span class=\"muted\">not measured</span>" }
            let text = HTML.duration(value)
            switch met {
            case true?: return HTML.status(text + " · met", tone: .good)
            case false?: return HTML.status(text + " · missed", tone: .bad)
            case nil: return HTML.escape(text)
            }
        }
        let rows = applications.map { a in
            let o = objectives.first { $0.application == a.name }
            return """
                <tr><td><strong>\(HTML.escape(a.name))</strong><div class="muted">\(HTML.escape(a.description))</div></td><td>\(a.machines.map(HTML.escape).joined(separator: ", "))</td>
                <td>\(goal(a.rpoSeconds))</td><td>\(measured(o?.measuredRPOSeconds, o?.rpoMet))</td><td>\(goal(a.rtoSeconds))</td>
                <td>\(measured(o?.measuredRTOSeconds, o?.rtoMet))</td><td>\(o?.lastDrillAt.map { HTML.ago($0, now: now) } ?? "never")</td></tr>
                """
        }.joined()
        let body = """
            <h1>Applications</h1>
            <p class="muted">Measured RPO: the worst current lag of the application's machines. Measured RTO: the worst of their last passed drills (job start → acceptance checks passed).</p>
            <div class="table-wrap"><table><thead><tr><th scope="col">Application</th><th scope="col">Machines</th><th scope="col">RPO objective</th><th scope="col">RPO now</th>
            <th scope="col">RTO objective</th><th scope="col">RTO of last drill</th><th scope="col">Last drill</th></tr></thead><tbody>\(rows)</tbody></table></div>
            \(applications.isEmpty ? "<p class=\"muted\">No applications yet (an admin creates them: <code>lifeboat applications create</code>).</p>" : "")
            """
        return ConsolePage(title: "Applications", active: "/applications", principal: principal, flash: Self.flash(request), body: body).response()
    }

    @Sendable func incidentsPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let (incidents, applications) = try await blocking { (try catalog.incidents(status: nil), try catalog.applications().map(\.name)) }
        let mayManage = principal.may(.manageIncidents)
        let mayNote = principal.may(.writeNotes)
        let cards = incidents.map { i -> String in
            let notes = i.notes.map { "<li><span class=\"muted\">\(HTML.time($0.time)) · \(HTML.escape($0.author)) · \($0.kind)</span><br>\(HTML.escape($0.text))</li>" }.joined()
            let launches = i.launches.map { "<a href=\"/jobs/\(HTML.component($0))\">\(HTML.escape($0))</a>" }.joined(separator: ", ")
            var forms = ""
            if mayNote {
                forms += """
                    <form method="post" action="/console/incidents/\(HTML.component(i.id))/notes">\(csrfField(principal))
                    <p><label for="note-\(HTML.escape(i.id))">Add a note or a report</label><textarea id="note-\(HTML.escape(i.id))" name="text" required></textarea></p>
                    <p><label for="kind-\(HTML.escape(i.id))">Kind</label><select id="kind-\(HTML.escape(i.id))" name="kind"><option value="NOTE">Working note</option><option value="REPORT">Report for decision-makers</option></select></p>
                    <button type="submit">Add</button></form>
                    """
            }
            if mayManage && i.status == .open {
                forms += """
                    <form method="post" action="/console/incidents/\(HTML.component(i.id))/close">\(csrfField(principal))
                    <p><label for="summary-\(HTML.escape(i.id))">Summary (what happened, what was done)</label><textarea id="summary-\(HTML.escape(i.id))" name="summary" required></textarea></p>
                    <button class="danger" type="submit">Close incident</button></form>
                    """
            }
            return """
                <section class="card" id="\(HTML.escape(i.id))"><h2>\(HTML.escape(i.title))</h2>
                <p>\(i.status == .open ? HTML.status("Open", tone: .bad) : HTML.status("Closed", tone: .idle)) · \(i.severity.rawValue) · \(HTML.escape(i.id))
                · declared \(HTML.time(i.declaredAt)) UTC by \(HTML.escape(i.declaredBy))\(i.applications.isEmpty ? "" : " · applications: " + i.applications.map(HTML.escape).joined(separator: ", "))</p>
                \(i.closedAt.map { "<p>Closed \(HTML.time($0)) UTC by \(HTML.escape(i.closedBy ?? "")): \(HTML.escape(i.summary ?? ""))</p>" } ?? "")
                <p>Launches under it: \(launches.isEmpty ? "none" : launches)</p>
                \(notes.isEmpty ? "" : "<ul>\(notes)</ul>")\(forms)</section>
                """
        }.joined()
        var declare = ""
        if mayManage {
            let options = applications.map { "<option value=\"\(HTML.escape($0))\">\(HTML.escape($0))</option>" }.joined()
            declare = """
                <section class="card"><h2>Declare an incident</h2><form method="post" action="/console/incidents">\(csrfField(principal))
                <p><label for="title">What happened</label><input id="title" name="title" type="text" required></p>
                <div class="grid"><p><label for="severity">Severity</label><select id="severity" name="severity"><option>CRITICAL</option><option selected>HIGH</option><option>MEDIUM</option><option>LOW</option></select></p>
                <p><label for="applications">Affected applications</label><select id="applications" name="application" multiple>\(options)</select></p></div>
                <button class="danger" type="submit">Declare incident</button></form>
                <p class="muted">While an incident is open, operators may launch in Recovery Mode under it.</p></section>
                """
        }
        let body = "<h1>Incidents</h1>\(declare)\(cards)\(incidents.isEmpty ? "<p class=\"muted\">No incidents.</p>" : "")"
        return ConsolePage(title: "Incidents", active: "/incidents", principal: principal, flash: Self.flash(request), body: body).response()
    }

    @Sendable func consoleDeclare(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        let title = try form.required("title", "a title")
        guard let severity = IncidentSeverity(rawValue: (form.value("severity") ?? "").uppercased()) else {
            throw APIError(.badRequest, "incident.invalid", "choose a severity")
        }
        let applications = form.values("application").filter { !$0.isEmpty }
        let user = principal.user
        let incident = try await blocking { try catalog.declareIncident(title: title, severity: severity, applications: applications, by: user) }
        context.audit.set(target: "incident \(incident.id)", detail: "declare \(severity.rawValue): \(title)")
        return seeOther("/incidents?ok=" + HTML.component("Declared \(incident.id): recovery launches may now run under it.") + "#" + incident.id)
    }

    @Sendable func consoleClose(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let id = try Self.parameter(context, "id")
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        let summary = try form.required("summary", "a summary")
        let user = principal.user
        context.audit.set(target: "incident \(id)", detail: "close")
        _ = try await blocking { try catalog.closeIncident(id: id, summary: summary, by: user) }
        return seeOther("/incidents?ok=" + HTML.component("Closed \(id)."))
    }

    @Sendable func consoleNote(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let id = try Self.parameter(context, "id")
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        let text = try form.required("text", "the note's text")
        let kind = (form.value("kind") ?? "NOTE").uppercased()
        let user = principal.user
        context.audit.set(target: "incident \(id)", detail: kind)
        _ = try await blocking { try catalog.addIncidentNote(incident: id, author: user, kind: kind, text: text) }
        return seeOther("/incidents?ok=" + HTML.component("Added to \(id).") + "#" + id)
    }

    @Sendable func usersPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let users = try await blocking { try catalog.users() }
        let admin = principal.may(.administer)
        let roleRows = Role.allCases.map { role in
            let holders = users.filter { $0.isActive && $0.roles.contains(role) }.map(\.name)
            return "<tr><td><strong>\(role.rawValue)</strong><div class=\"muted\">\(HTML.escape(role.summary))</div></td><td>\(holders.isEmpty ? HTML.status("Nobody", tone: .bad) : holders.map(HTML.escape).joined(separator: ", "))</td></tr>"
        }.joined()
        let userRows = users.map { u in
            var edit = ""
            if admin {
                let boxes = Role.allCases.map { role in
                    "<label style=\"display:inline;margin-right:.6rem\"><input type=\"checkbox\" name=\"role\" value=\"\(role.rawValue)\"\(u.roles.contains(role) ? " checked" : "")> \(role.rawValue)</label>"
                }.joined()
                edit = """
                    <form method="post" action="/console/users/\(HTML.component(u.name))">\(csrfField(principal))<fieldset><legend>Roles of \(HTML.escape(u.name))</legend>\(boxes)</fieldset>
                    <button type="submit" name="action" value="roles">Save roles</button> <button type="submit" name="action" value="\(u.isActive ? "disable" : "enable")">\(u.isActive ? "Disable" : "Enable")</button></form>
                    """
            }
            return "<tr><td>\(HTML.escape(u.name))</td><td>\(u.roles.sorted().map(\.rawValue).joined(separator: ", "))</td><td>\(u.isActive ? HTML.status("Active", tone: .good) : HTML.status("Disabled", tone: .idle))</td><td>\(edit)</td></tr>"
        }.joined()
        var create = ""
        if admin {
            let boxes = Role.allCases.map { "<label style=\"display:inline;margin-right:.6rem\"><input type=\"checkbox\" name=\"role\" value=\"\($0.rawValue)\"> \($0.rawValue)</label>" }.joined()
            create = """
                <section class="card"><h2>Create a user</h2><form method="post" action="/console/users">\(csrfField(principal))
                <div class="grid"><p><label for="new-name">User name</label><input id="new-name" name="name" type="text" required autocomplete="off"></p>
                <p><label for="new-password">Password (at least 12 characters)</label><input id="new-password" name="password" type="password" required minlength="12" autocomplete="new-password"></p></div>
                <fieldset><legend>Roles</legend>\(boxes)</fieldset><button class="primary" type="submit">Create</button></form></section>
                """
        }
        let body = """
            <h1>Users and roles</h1>
            <section class="card"><h2>Who holds each role</h2><table><thead><tr><th scope="col">Role</th><th scope="col">Holders</th></tr></thead><tbody>\(roleRows)</tbody></table>
            <p class="muted">Verify that every holder really can act: <code>lifeboat access check</code>.</p></section>
            \(create)
            <div class="table-wrap"><table><thead><tr><th scope="col">User</th><th scope="col">Roles</th><th scope="col">State</th><th scope="col">\(admin ? "Change" : "")</th></tr></thead><tbody>\(userRows)</tbody></table></div>
            """
        return ConsolePage(title: "Users and roles", active: "/users", principal: principal, flash: Self.flash(request), body: body).response()
    }

    @Sendable func consoleCreateUser(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        let name = try form.required("name", "a user name")
        let password = form.value("password") ?? ""
        try Self.checkPassword(password, user: name)
        let roles = try Set(form.values("role").map { try Role.parseList($0) }.flatMap { $0 })
        guard !roles.isEmpty else { throw APIError(.badRequest, "user.no-roles", "give the user at least one role") }
        context.audit.set(target: "user \(name)", detail: "roles \(roles.sorted().map(\.rawValue).joined(separator: ","))")
        _ = try await blocking { try catalog.createUser(name: name, password: password, roles: roles) }
        return seeOther("/users?ok=" + HTML.component("Created \(name)."))
    }

    @Sendable func consoleUpdateUser(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let name = try Self.parameter(context, "name")
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        let action = form.value("action") ?? "roles"
        context.audit.set(target: "user \(name)", detail: action)
        switch action {
        case "disable", "enable":
            _ = try await blocking { try catalog.setUserDisabled(name, disabled: action == "disable") }
        default:
            let roles = try Set(form.values("role").map { try Role.parseList($0) }.flatMap { $0 })
            guard !roles.isEmpty else { throw APIError(.badRequest, "user.no-roles", "a user needs at least one role (disable the user instead)") }
            context.audit.set(detail: "roles \(roles.sorted().map(\.rawValue).joined(separator: ","))")
            _ = try await blocking { try catalog.setRoles(user: name, roles: roles) }
        }
        return seeOther("/users?ok=" + HTML.component("Updated \(name)."))
    }

    @Sendable func auditPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let pageNumber = min(max(1, Int(Self.query(request, "page") ?? "1") ?? 1), 1_000_000)
        let verifier = auditVerifier
        let (entries, total, verification) = try await blocking { () -> ([AuditEntry], Int, AuditVerification) in
            (
                try catalog.auditEntries(limit: 100, offset: (pageNumber - 1) * 100, newestFirst: true),
                try catalog.auditCount(), try verifier.verify(catalog)
            )
        }
        let rows = entries.map { e in
            "<tr><td>\(e.seq)</td><td>\(HTML.time(e.time))</td><td>\(HTML.escape(e.actor))</td><td>\(HTML.escape(e.action))</td><td>\(HTML.escape(e.target))</td><td class=\"optional\">\(HTML.escape(e.source))</td><td>\(HTML.escape(e.result))</td><td class=\"optional\">\(HTML.escape(e.detail))</td></tr>"
        }.joined()
        let integrity = verification.intact
            ? HTML.status("Hash chain intact · \(verification.entries) entries · head \(String(verification.headHash.prefix(16)))…", tone: .good)
            : HTML.status("TAMPERED: \(verification.problems.count) problem(s) — \(verification.problems.first?.message ?? "")", tone: .bad)
        let more = total > pageNumber * 100 ? "<nav class=\"pager\"><a class=\"button\" href=\"/audit?page=\(pageNumber + 1)\">Older →</a></nav>" : ""
        let body = """
            <h1>Audit log</h1><p>\(integrity)</p>
            <div class="table-wrap"><table><thead><tr><th scope="col">#</th><th scope="col">Time (UTC)</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Target</th>
            <th scope="col" class="optional">From</th><th scope="col">Result</th><th scope="col" class="optional">Detail</th></tr></thead><tbody>\(rows)</tbody></table></div>\(more)
            """
        return ConsolePage(title: "Audit log", active: "/audit", principal: principal, flash: Self.flash(request), body: body).response()
    }

    @Sendable func settingsPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let (settings, machines) = try await blocking { (try catalog.controlSettings(), try catalog.machines()) }
        let admin = principal.may(.administer)
        let disabled = admin ? "" : " disabled"
        let rules = settings.pitPolicy.rules.map { "\($0.unit.rawValue):\($0.interval):\($0.retentionDuration)" }.joined(separator: "\n")
        let machineForms = machines.map { m -> String in
            let checks = m.launchSettings.checks.map(\.description).joined(separator: "\n")
            let id = HTML.escape(m.name)
            return """
                <form class="card" method="post" action="/console/machines/\(HTML.component(m.name))">\(csrfField(principal))<h2>\(id)</h2>
                <div class="grid"><p><label for="throttle-\(id)">Bandwidth limit (Mbit/s, 0 = none)</label><input id="throttle-\(id)" name="throttle" type="number" min="0" value="\(m.throttleMbps)"\(disabled)></p>
                <p><label for="vcpus-\(id)">vCPUs</label><input id="vcpus-\(id)" name="vcpus" type="number" min="1" max="64" value="\(m.launchSettings.vcpus)"\(disabled)></p>
                <p><label for="memory-\(id)">Memory (MiB)</label><input id="memory-\(id)" name="memory" type="number" min="64" value="\(m.launchSettings.memoryMiB)"\(disabled)></p>
                <p><label for="timeout-\(id)">Check timeout (s)</label><input id="timeout-\(id)" name="checkTimeout" type="number" min="1" value="\(m.launchSettings.checkTimeoutSeconds)"\(disabled)></p></div>
                <p><label for="checks-\(id)">Acceptance checks, one per line (serial:REGEX, tcp:PORT, http:PORT:PATH[:STATUS[:REGEX]], command:SHELL)</label><textarea id="checks-\(id)" name="checks"\(disabled)>\(HTML.escape(checks))</textarea></p>
                \(admin ? "<button type=\"submit\">Save \(id)</button>" : "")</form>
                """
        }.joined()
        let body = """
            <h1>Settings</h1>
            <form class="card" method="post" action="/console/settings">\(csrfField(principal))<h2>Incident response</h2>
            <p><label style="display:inline"><input type="checkbox" name="requireIncident" value="true"\(settings.requireIncidentForRecovery ? " checked" : "")\(disabled)> Recovery Mode needs an open incident</label></p>
            <div class="grid"><p><label for="overdue">Drill overdue after (days)</label><input id="overdue" name="drillOverdueDays" type="number" min="1" value="\(settings.drillOverdueDays)"\(disabled)></p>
            <p><label for="session">Session length (hours)</label><input id="session" name="sessionHours" type="number" min="1" value="\(settings.sessionHours)"\(disabled)></p>
            <p><label for="failures">Failed logins before lockout</label><input id="failures" name="loginFailures" type="number" min="1" value="\(settings.loginFailuresBeforeLockout)"\(disabled)></p>
            <p><label for="lockout">Lockout (seconds)</label><input id="lockout" name="lockoutSeconds" type="number" min="1" value="\(settings.lockoutSeconds)"\(disabled)></p></div>
            <h2>Point-in-time policy</h2>
            <div class="grid"><p><label for="keepall">Keep every commit for (seconds)</label><input id="keepall" name="keepAllSeconds" type="number" min="0" max="31536000" value="\(settings.pitPolicy.keepEveryCommitFor)"\(disabled)></p>
            <p><label for="rules">Rules, one per line: UNIT:INTERVAL:RETENTION (MINUTE, HOUR, DAY)</label><textarea id="rules" name="rules"\(disabled)>\(HTML.escape(rules))</textarea></p></div>
            \(admin ? "<button class=\"primary\" type=\"submit\">Save settings</button>" : "<p class=\"muted\">Only an admin changes settings.</p>")</form>
            <h2>Machines: replication and launch settings</h2>\(machineForms)
            """
        return ConsolePage(title: "Settings", active: "/settings", principal: principal, flash: Self.flash(request), body: body).response()
    }

    @Sendable func consoleSettings(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        let before = try await blocking { try catalog.controlSettings() }
        var settings = before
        func int(_ name: String) throws -> Int? {
            guard let text = form.value(name), !text.isEmpty else { return nil }
            guard let value = Int(text) else { throw APIError(.badRequest, "settings.invalid", "\(name) must be a whole number, got '\(text)'") }
            return value
        }
        settings.requireIncidentForRecovery = form.value("requireIncident") == "true"
        if let v = try int("drillOverdueDays") { settings.drillOverdueDays = v }
        if let v = try int("sessionHours") { settings.sessionHours = v }
        if let v = try int("loginFailures") { settings.loginFailuresBeforeLockout = v }
        if let v = try int("lockoutSeconds") { settings.lockoutSeconds = v }
        if let v = try int("keepAllSeconds") {
            guard (0...31_536_000).contains(v) else {
                throw APIError(.badRequest, "settings.invalid", "keep every commit for 0 s to 1 year, got \(v) s")
            }
            settings.pitPolicy.keepEveryCommitFor = Int64(v)
        }
        if let text = form.value("rules") {
            settings.pitPolicy.rules = try text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { line in
                let parts = line.split(separator: ":")
                guard parts.count == 3, let unit = RetentionPolicy.Unit(rawValue: parts[0].uppercased()), let interval = Int(parts[1]), let retention = Int(parts[2]) else {
                    throw APIError(.badRequest, "settings.invalid", "rule '\(line)' must look like HOUR:1:24 (UNIT:INTERVAL:RETENTION)")
                }
                return RetentionPolicy.Rule(unit: unit, interval: interval, retentionDuration: retention)
            }
        }
        try settings.validate()
        let stored = settings
        var changed: [String] = []
        if before.requireIncidentForRecovery != stored.requireIncidentForRecovery { changed.append("requireIncidentForRecovery=\(stored.requireIncidentForRecovery)") }
        if before.pitPolicy != stored.pitPolicy { changed.append("pitPolicy") }
        if before.drillOverdueDays != stored.drillOverdueDays { changed.append("drillOverdueDays=\(stored.drillOverdueDays)") }
        if before.sessionHours != stored.sessionHours { changed.append("sessionHours=\(stored.sessionHours)") }
        if before.loginFailuresBeforeLockout != stored.loginFailuresBeforeLockout { changed.append("loginFailuresBeforeLockout=\(stored.loginFailuresBeforeLockout)") }
        if before.lockoutSeconds != stored.lockoutSeconds { changed.append("lockoutSeconds=\(stored.lockoutSeconds)") }
        context.audit.set(target: "settings", detail: changed.isEmpty ? "no change" : changed.joined(separator: ", "))
        try await blocking { try catalog.setControlSettings(stored) }
        return seeOther("/settings?ok=" + HTML.component("Settings saved."))
    }

    @Sendable func consoleMachineSettings(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let name = try Self.parameter(context, "name")
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        guard let machine = try await blocking({ try catalog.machine(named: name) }), machine.isActive else { throw APIError.notFound("machine", name) }
        var settings = machine.launchSettings
        func int(_ field: String) throws -> Int? {
            guard let text = form.value(field), !text.isEmpty else { return nil }
            guard let value = Int(text) else { throw APIError(.badRequest, "machine.invalid-setting", "\(field) must be a whole number, got '\(text)'") }
            return value
        }
        if let v = try int("vcpus") { settings.vcpus = v }
        if let v = try int("memory") { settings.memoryMiB = v }
        if let v = try int("checkTimeout") { settings.checkTimeoutSeconds = v }
        if let text = form.value("checks") {
            settings.checks = try text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map(AcceptanceCheck.init(parsing:))
        }
        try settings.validate()
        let throttle = try int("throttle")
        if let throttle, !(0...100_000).contains(throttle) {
            throw APIError(.badRequest, "machine.invalid-setting", "the bandwidth limit must be 0 (none) to 100000 Mbit/s")
        }
        context.audit.set(target: "machine \(name)", detail: "console settings")
        let stored = settings
        try await blocking {
            try catalog.setLaunchSettings(machine: name, stored)
            if let throttle { try catalog.setSettings(machine: name, throttleMbps: UInt32(throttle), maxFreezeMilliseconds: nil) }
        }
        return seeOther("/settings?ok=" + HTML.component("Saved \(name)."))
    }
}
