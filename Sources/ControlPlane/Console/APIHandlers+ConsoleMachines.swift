import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import NIOCore
import Recovery

extension APIHandlers {
    static let machinesPageSize = 50

    /// The Machines page: filter and search, a row per machine with its replication state (icon and text),
    /// initial-sync progress or lag, backlog, last recovery point, DR lifecycle; purple while a drill runs.
    /// Select machines, then Launch target machines → Test Mode / Recovery Mode → Choose recovery point.
    @Sendable func machinesPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let started = ContinuousClock.now
        let search = Self.query(request, "search")?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        let application = Self.query(request, "application") ?? ""
        let state = Self.query(request, "state") ?? ""
        let pageNumber = min(max(1, Int(Self.query(request, "page") ?? "1") ?? 1), 1_000_000)
        let now = self.now
        let catalog = self.catalog
        let data = try await blocking { () -> MachinesPageData in
            let filter = MachineFilter(search: search, application: application, state: state)
            let (page, total) = try catalog.machinesPage(
                filter: filter, offset: (pageNumber - 1) * Self.machinesPageSize, limit: Self.machinesPageSize
            )
            return MachinesPageData(
                machines: page, total: total, instances: try catalog.instances(), applications: try catalog.applications().map(\.name),
                openIncidents: try catalog.openIncidents(), settings: try catalog.controlSettings()
            )
        }
        let rows = data.machines.map { machineRow($0, instances: data.instances, now: now, overdueDays: data.settings.drillOverdueDays) }.joined()
        let query = "search=\(HTML.component(search))&application=\(HTML.component(application))&state=\(HTML.component(state))&page=\(pageNumber)"
        if Self.query(request, "fragment") == "rows" {
            return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(string: rows)))
        }
        let pages = max(1, (data.total + Self.machinesPageSize - 1) / Self.machinesPageSize)
        let mayDrill = principal.may(.launchDrill)
        let mayRecover = principal.may(.launchRecovery)
        let recoveryNote: String
        let recoveryAllowed: Bool
        switch (data.settings.requireIncidentForRecovery, data.openIncidents.count) {
        case (true, 0):
            recoveryNote = "Needs an open incident — none is open. A decider declares one."
            recoveryAllowed = false
        case (_, 1):
            recoveryNote = "Under incident \(data.openIncidents[0].id): \(data.openIncidents[0].title)"
            recoveryAllowed = true
        case (_, 0):
            recoveryNote = "Failover (the incident rule is off)"
            recoveryAllowed = true
        default:
            recoveryNote = "\(data.openIncidents.count) incidents are open: choose one in the next step"
            recoveryAllowed = true
        }
        var launchMenu = ""
        if mayDrill || mayRecover {
            launchMenu = """
                <div class="menu">
                <button id="launch-button" class="primary" type="button" aria-haspopup="menu" aria-expanded="false" aria-controls="launch-menu" disabled>Launch target machines ▾</button>
                <div id="launch-menu" role="menu" hidden aria-label="Launch mode">
                \(mayDrill ? "<button type=\"button\" role=\"menuitem\" data-mode=\"TEST\" id=\"menu-test\">Test Mode<small>A drill on an isolated network; the source is untouched.</small></button>" : "")
                \(mayRecover ? "<button type=\"button\" role=\"menuitem\" data-mode=\"RECOVERY\" id=\"menu-recovery\"\(recoveryAllowed ? "" : " disabled aria-disabled=\"true\"")>Recovery Mode<small id=\"recovery-note\">\(HTML.escape(recoveryNote))</small></button>" : "")
                </div></div>
                """
        }
        let incidentChoice: String
        if data.openIncidents.isEmpty {
            incidentChoice = ""
        } else {
            let options = data.openIncidents.map { "<option value=\"\(HTML.escape($0.id))\">\(HTML.escape($0.id)) — \(HTML.escape($0.title))</option>" }.joined()
            incidentChoice = "<p><label for=\"point-incident\">Incident (recovery launches are recorded under it)</label><select id=\"point-incident\" name=\"incident\">\(options)</select></p>"
        }
        let applicationOptions = ([""] + data.applications).map { name in
            "<option value=\"\(HTML.escape(name))\"\(name == application ? " selected" : "")>\(name.isEmpty ? "All applications" : HTML.escape(name))</option>"
        }.joined()
        let states = ["", "INITIATING", "INITIAL_SYNC", "CONTINUOUS", "BACKLOG", "RESCAN", "STALLED", "DISCONNECTED", "PAUSED", "STOPPED"]
        let stateOptions = states.map { s in
            "<option value=\"\(s)\"\(s == state ? " selected" : "")>\(s.isEmpty ? "Any state" : Self.stateText(s))</option>"
        }.joined()
        var pager = ""
        if pages > 1 {
            func link(_ n: Int, _ text: String) -> String {
                "<a class=\"button\" href=\"\(HTML.escape("/machines?search=\(HTML.component(search))&application=\(HTML.component(application))&state=\(HTML.component(state))&page=\(n)"))\">\(text)</a>"
            }
            pager = "<nav class=\"pager\" aria-label=\"Pages\">\(pageNumber > 1 ? link(pageNumber - 1, "← Previous") : "")<span class=\"muted\">Page \(pageNumber) of \(pages) · \(data.total) machines</span>\(pageNumber < pages ? link(pageNumber + 1, "Next →") : "")</nav>"
        }
        let body = """
            <h1>Machines</h1>
            <form class="toolbar" method="get" action="/machines" role="search">
            <div class="grow"><label for="search">Search by name or application</label><input id="search" name="search" type="search" value="\(HTML.escape(search))"></div>
            <div><label for="application">Application</label><select id="application" name="application">\(applicationOptions)</select></div>
            <div><label for="state">Replication state</label><select id="state" name="state">\(stateOptions)</select></div>
            <div><button type="submit">Filter</button></div>
            </form>
            <div class="toolbar"><span id="selected-count" class="muted grow" aria-live="polite">No machine selected</span>\(data.total > data.machines.count ? "<button type=\"button\" id=\"select-matching\" hidden>Select all \(data.total) machines that match</button>" : "")\(launchMenu)</div>
            <div class="table-wrap"><table id="machines" data-total="\(data.total)" data-search="\(HTML.escape(search))" data-application="\(HTML.escape(application))" data-state="\(HTML.escape(state))">
            <caption class="muted" style="text-align:left">\(data.total) machine\(data.total == 1 ? "" : "s")\(search.isEmpty && application.isEmpty && state.isEmpty ? "" : " match")</caption>
            <thead><tr><th scope="col"><input type="checkbox" id="select-all" aria-label="Select every machine on this page"></th>
            <th scope="col">Machine</th><th scope="col" class="optional">Application</th><th scope="col">Status</th>
            <th scope="col">Sync / lag</th><th scope="col" class="optional">Backlog</th><th scope="col" class="optional">Last recovery point</th><th scope="col">DR lifecycle</th></tr></thead>
            <tbody id="machine-rows" data-fragment="\(HTML.escape("/machines?\(query)&fragment=rows"))">\(rows)</tbody></table></div>
            \(pager)
            <dialog id="point-dialog" aria-labelledby="point-dialog-title">
            <header><strong id="point-dialog-title">Choose recovery point</strong></header>
            <form method="post" action="/console/launch">
            <input type="hidden" name="csrf" value="\(HTML.escape(principal.csrf ?? ""))">
            <input type="hidden" id="point-mode" name="mode" value="TEST">
            <input type="hidden" id="point-scope" name="scope" value="selected"><input type="hidden" id="point-expected" name="expected" value="">
            <input type="hidden" name="search" value="\(HTML.escape(search))"><input type="hidden" name="application" value="\(HTML.escape(application))"><input type="hidden" name="state" value="\(HTML.escape(state))">
            <div class="body"><p class="muted">The latest point comes first; earlier ones follow, newest first. Each machine launches from the point chosen for it.</p>
            \(incidentChoice)<div id="point-list"></div></div>
            <div class="actions"><button type="button" id="point-cancel">Cancel</button><button type="submit" class="primary" id="point-continue">Continue with launch</button></div>
            </form></dialog>
            """
        return ConsolePage(title: "Machines", active: "/machines", principal: principal, flash: Self.flash(request), body: body)
            .response(started: started)
    }

    struct MachinesPageData: Sendable {
        var machines: [MachineRecord]
        var total: Int
        var instances: [InstanceRecord]
        var applications: [String]
        var openIncidents: [IncidentRecord]
        var settings: ControlSettings
    }

    static func stateText(_ state: String) -> String {
        switch state {
        case "INITIAL_SYNC": "Initial sync"
        case "CONTINUOUS": "Continuous"
        case "INITIATING": "Initiating"
        case "BACKLOG": "Backlog"
        case "RESCAN": "Rescan"
        case "STALLED": "Stalled"
        case "DISCONNECTED": "Disconnected"
        case "PAUSED": "Paused"
        case "STOPPED": "Stopped"
        case "REMOVED": "Removed"
        default: state
        }
    }

    static func stateTone(_ state: String) -> HTML.Tone {
        switch state {
        case "CONTINUOUS": .good
        case "INITIAL_SYNC", "INITIATING": .info
        case "BACKLOG", "RESCAN": .warn
        case "STALLED", "DISCONNECTED": .bad
        default: .idle
        }
    }

    func machineRow(_ m: MachineRecord, instances: [InstanceRecord], now: Timestamp, overdueDays: Int) -> String {
        let name = HTML.escape(m.name)
        let drills = instances.filter { $0.machine == m.name && $0.mode == .test && $0.state.holdsResources }
        var status = ""
        if let drill = drills.first {
            status += HTML.status("Test instance running", tone: .drill, title: "recovery instance \(drill.id) (Test mode)") + "<br>"
        }
        status += HTML.status(Self.stateText(m.state), tone: Self.stateTone(m.state), title: m.stateReason)
        if let reason = m.stateReason, m.state == "STALLED" || m.state == "DISCONNECTED" {
            status += "<div class=\"muted\">\(HTML.escape(reason))</div>"
        }
        var sync = "–"
        if m.state == "INITIAL_SYNC", let p = m.initialSyncPercent {
            sync = "<progress max=\"100\" value=\"\(Int(p))\" aria-label=\"Initial sync of \(name)\"></progress> \(Int(p)) %"
            if let eta = m.etaSeconds { sync += " <span class=\"muted\">· ETA \(HTML.duration(eta))</span>" }
        } else if let lag = m.lagSeconds(now: now) {
            sync = "lag \(HTML.duration(lag))"
        }
        let lastPoint = m.lastConsistentCaptureTime.map { "\(HTML.time($0)) <span class=\"muted\">· \(HTML.ago($0, now: now))</span>" } ?? "<span class=\"muted\">none yet</span>"
        return """
            <tr data-machine="\(name)"><td><input type="checkbox" name="machine" value="\(name)" aria-label="Select \(name)"></td>
            <td><strong>\(name)</strong></td><td class="optional">\(HTML.escape(m.application ?? "–"))</td><td>\(status)</td><td>\(sync)</td>
            <td class="optional">\(ByteFormatting.binary(Int64(m.backlogBytes)))</td><td class="optional">\(lastPoint)</td><td>\(lifecycle(m, now: now, overdueDays: overdueDays))</td></tr>
            """
    }

    /// "Tested recently · 2 days ago", "Not tested", "Test overdue", "Test failed", "Recovered".
    func lifecycle(_ m: MachineRecord, now: Timestamp, overdueDays: Int) -> String {
        switch m.effectiveLifecycle(now: now, overdueDays: overdueDays) {
        case .notTested: return HTML.status("Not tested", tone: .idle)
        case .testedRecently:
            return HTML.status("Tested recently", tone: .good) + (m.lastDrillPassedAt.map { " <span class=\"muted\">· \(HTML.ago($0, now: now))</span>" } ?? "")
        case .testOverdue:
            return HTML.status("Test overdue", tone: .warn) + (m.lastDrillPassedAt.map { " <span class=\"muted\">· last passed \(HTML.ago($0, now: now))</span>" } ?? "")
        case .testFailed:
            return HTML.status("Test failed", tone: .bad) + (m.lastDrillAt.map { " <span class=\"muted\">· \(HTML.ago($0, now: now))</span>" } ?? "")
        case .recoveryLaunched: return HTML.status("Recovered", tone: .info)
        }
    }

    /// Continue with launch: the chosen mode and a point per machine; the same rules as `POST /api/v1/launches`.
    @Sendable func consoleLaunch(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        guard let mode = LaunchMode(rawValue: (form.value("mode") ?? "").uppercased()) else {
            throw APIError(.badRequest, "launch.bad-mode", "choose Test Mode or Recovery Mode")
        }
        try Self.require(mode == .test ? .launchDrill : .launchRecovery, principal)
        var machines = form.values("machine")
        var perMachine: [String: String] = [:]
        if form.value("scope") == "matching" {
            // Every machine the page's filter matches (beyond the page shown), each from its latest point.
            let filter = MachineFilter(search: form.value("search") ?? "", application: form.value("application") ?? "", state: form.value("state") ?? "")
            let catalog = self.catalog
            machines = try await blocking { try catalog.machinesPage(filter: filter, offset: 0, limit: 100_000).machines.map(\.name) }
            // What was shown is what launches: if the filter matches other machines by now, ask again.
            guard let expected = Int(form.value("expected") ?? ""), expected == machines.count else {
                throw APIError(
                    .conflict, "launch.selection-changed",
                    "the filter now matches \(machines.count) machines, not the number shown: look at the list again and launch once more"
                )
            }
        } else {
            for machine in machines { perMachine[machine] = form.value("point:" + machine) ?? "latest" }
        }
        let incident = form.value("incident").flatMap { $0.isEmpty ? nil : $0 }
        let outcome = try await performLaunch(
            mode: mode, selection: .machines(machines), global: nil, perMachine: perMachine, incident: incident,
            user: principal.user, dryRun: false, audit: context.audit
        )
        return seeOther("/jobs/\(HTML.component(outcome.job?.id ?? ""))")
    }
}
