import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import NIOCore

extension APIHandlers {
    @Sendable func jobsPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let jobs = try await blocking { try catalog.jobs(limit: 100) }
        let rows = jobs.map { job in
            let machines = job.items.map { "\(HTML.escape($0.machine)): \(HTML.escape($0.launchStatus.rawValue))" }.joined(separator: "<br>")
            return """
                <tr><td><a href="/jobs/\(HTML.component(job.id))">\(HTML.escape(job.id))</a></td><td>\(job.type.rawValue)</td>
                <td>\(job.mode.map { Self.modeBadge($0) } ?? "–")</td><td>\(Self.jobStatus(job))</td><td class="optional">\(HTML.time(job.createdAt))</td><td>\(machines)</td></tr>
                """
        }.joined()
        let body = """
            <h1>Jobs</h1><div class="table-wrap"><table><thead><tr><th scope="col">Job</th><th scope="col">Type</th><th scope="col">Mode</th>
            <th scope="col">Status</th><th scope="col" class="optional">Created (UTC)</th><th scope="col">Machines</th></tr></thead><tbody>\(rows)</tbody></table></div>
            \(jobs.isEmpty ? "<p class=\"muted\">No jobs yet: launch from the Machines page.</p>" : "")
            """
        return ConsolePage(title: "Jobs", active: "/jobs", principal: principal, flash: Self.flash(request), body: body).response()
    }

    static func modeBadge(_ mode: LaunchMode) -> String {
        mode == .test ? HTML.status("Test", tone: .drill) : HTML.status("Recovery", tone: .bad)
    }

    static func jobStatus(_ job: JobRecord) -> String {
        switch job.status {
        case .pending: return HTML.status("Pending", tone: .idle)
        case .started: return HTML.status("Running", tone: .info)
        case .completed:
            let failed = job.items.contains { $0.launchStatus == .failed }
            return failed ? HTML.status("Completed with failures", tone: .bad) : HTML.status("Completed", tone: .good)
        }
    }

    /// One job: its machines with status and RTO, and the event log, live over server-sent events.
    @Sendable func jobPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let id = try Self.parameter(context, "id")
        let found = try await blocking { () -> (JobRecord, [JobEvent], String?, String?)? in
            guard let job = try catalog.job(id: id) else { return nil }
            let link = try catalog.jobIncident(id)
            return (job, try catalog.jobEvents(job: id), link.incident, link.requestedBy)
        }
        guard let (job, events, incident, requestedBy) = found else { throw APIError.notFound("job", id) }
        let items = job.items.map { item in
            """
            <tr><td>\(HTML.escape(item.machine))</td><td>\(HTML.escape(item.instance))</td><td>\(item.point.map { HTML.escape(DTO.point($0) ?? "") } ?? "–")</td>
            <td data-item-status="\(HTML.escape(item.instance))">\(item.launchStatus.rawValue)</td>
            <td data-item-rto="\(HTML.escape(item.instance))">\(item.rtoSeconds.map { String(format: "%.1f s", $0) } ?? "–")</td><td>\(HTML.escape(item.error ?? ""))</td></tr>
            """
        }.joined()
        let log = events.map { e in
            "<tr\(e.kind.contains("FAILED") ? " class=\"failed\"" : "")><td>\(HTML.escape(String(e.time.rfc3339.dropLast()).replacingOccurrences(of: "T", with: " ")))</td><td>\(HTML.escape(e.kind))</td><td>\(HTML.escape(e.machine ?? ""))</td><td>\(HTML.escape(e.detail + (e.error.map { " — error: " + $0 } ?? "")))</td></tr>"
        }.joined()
        let lastEvent = events.last?.id ?? 0
        let stream = job.status == .completed ? "" : " data-stream=\"/jobs/\(HTML.component(id))/stream?after=\(lastEvent)\""
        let body = """
            <h1>Job \(HTML.escape(id))</h1>
            <div class="card"><p>\(job.type.rawValue)\(job.mode.map { " · " + Self.modeBadge($0) } ?? "") · status <strong id="job-status">\(job.status.rawValue)</strong>
            · created \(HTML.time(job.createdAt)) UTC\(requestedBy.map { " by " + HTML.escape($0) } ?? "")\(incident.map { " · under incident <a href=\"/incidents#\(HTML.escape($0))\">\(HTML.escape($0))</a>" } ?? "")</p>
            <div class="table-wrap"><table><thead><tr><th scope="col">Machine</th><th scope="col">Instance</th><th scope="col">Point</th><th scope="col">Status</th><th scope="col">RTO</th><th scope="col">Error</th></tr></thead><tbody>\(items)</tbody></table></div></div>
            <h2>Event log</h2>
            <div class="table-wrap"><table id="job-log" class="log"\(stream)><thead><tr><th scope="col">Time (UTC)</th><th scope="col">Event</th><th scope="col">Machine</th><th scope="col">Detail</th></tr></thead><tbody>\(log)</tbody></table></div>
            """
        return ConsolePage(title: "Job \(id)", active: "/jobs", principal: principal, flash: Self.flash(request), body: body).response()
    }

    /// Server-sent events: `event` for each new log line, `job` with the job's state; ends when it completes.
    @Sendable func jobStream(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let id = try Self.parameter(context, "id")
        let start = Int64(Self.query(request, "after") ?? "0") ?? 0
        let catalog = self.catalog
        guard try await blocking({ try catalog.job(id: id) }) != nil else { throw APIError.notFound("job", id) }
        // A reconnecting EventSource says where it got to.
        let resume = request.headers[.init("Last-Event-ID")!].flatMap { Int64($0) } ?? start
        guard Self.streams.enter() else {
            throw APIError(.serviceUnavailable, "console.busy", "too many live job logs are open: close some pages, or reload this one later")
        }
        let tokenID = principal.tokenId
        let body = ResponseBody { writer in
            defer { Self.streams.leave() }
            var after = resume
            var polls = 0
            let deadline = ContinuousClock.now + .seconds(3600)
            while ContinuousClock.now < deadline && !Task.isCancelled {
                let since = after
                let (events, job) = try await Blocking.run { (try catalog.jobEvents(job: id, after: since), try catalog.job(id: id)) }
                var chunk = ""
                for event in events {
                    after = event.id
                    chunk += "event: event\nid: \(event.id)\ndata: \(String(decoding: try JSONBody.encoder.encode(DTO.event(event)), as: UTF8.self))\n\n"
                }
                if let job {
                    let link = try? await Blocking.run { try catalog.jobIncident(id) }
                    chunk += "event: job\ndata: \(String(decoding: try JSONBody.encoder.encode(DTO.job(job, incident: link?.incident, requestedBy: link?.requestedBy)), as: UTF8.self))\n\n"
                }
                try await writer.write(ByteBuffer(string: chunk))
                if job == nil || job?.status == .completed { break }
                try await Task.sleep(for: .milliseconds(500))
                polls += 1
                // Every 10 s: still logged in? (a session that ended or a disabled user stops receiving the log)
                if polls % 20 == 0 {
                    let valid = try await Blocking.run { try catalog.accessToken(id: tokenID)?.isValid(now: Timestamp.now()) ?? false }
                    if !valid { break }
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"], body: body)
    }

    /// Live job logs open at once, server-wide.
    static let streams = StreamCounter(limit: 64)

    @Sendable func instancesPage(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let showAll = Self.query(request, "all") == "true"
        let instances = try await blocking { try catalog.instances(includeTerminated: showAll) }
        let mayTerminate = principal.may(.terminateInstances)
        let rows = instances.map { i in
            let dto = DTO.instance(i)
            let terminate = mayTerminate && i.state.holdsResources
                ? """
                <form class="inline-form" method="post" action="/console/terminate"><input type="hidden" name="csrf" value="\(HTML.escape(principal.csrf ?? ""))">\
                <input type="hidden" name="instance" value="\(HTML.escape(i.id))"><button class="danger" type="submit" aria-label="Terminate \(HTML.escape(i.id))">Terminate</button></form>
                """ : ""
            return """
                <tr><td>\(HTML.escape(i.id))</td><td>\(HTML.escape(i.machine))</td><td>\(Self.modeBadge(i.mode))</td><td>\(HTML.escape(dto.point))<div class="muted">\(HTML.time(i.pointCaptureTime))</div></td>
                <td>\(HTML.escape(i.state.rawValue))\(i.stateReason.map { "<div class=\"muted\">\(HTML.escape($0))</div>" } ?? "")</td><td class="optional">\(HTML.escape(dto.address ?? "–"))</td>
                <td class="optional"><a href="/jobs/\(HTML.component(i.job))">\(HTML.escape(i.job))</a></td><td>\(terminate)</td></tr>
                """
        }.joined()
        let body = """
            <h1>Recovery instances</h1>
            <p><a href="/instances\(showAll ? "" : "?all=true")">\(showAll ? "Only those holding resources" : "Include terminated and failed")</a></p>
            <div class="table-wrap"><table id="instances"><thead><tr><th scope="col">Instance</th><th scope="col">Machine</th><th scope="col">Mode</th><th scope="col">Point</th>
            <th scope="col">State</th><th scope="col" class="optional">Access</th><th scope="col" class="optional">Job</th><th scope="col"><span class="muted">Action</span></th></tr></thead><tbody>\(rows)</tbody></table></div>
            \(instances.isEmpty ? "<p class=\"muted\">No recovery instance is running.</p>" : "")
            """
        return ConsolePage(title: "Recovery instances", active: "/instances", principal: principal, flash: Self.flash(request), body: body).response()
    }

    @Sendable func consoleTerminate(_ request: Request, _ context: APIRequestContext, _ principal: Principal) async throws -> Response {
        let form = try await ConsoleForm.read(request)
        try Self.checkCSRF(form, principal)
        let ids = form.values("instance")
        guard !ids.isEmpty else { throw APIError(.badRequest, "terminate.none", "choose an instance to terminate") }
        context.audit.set(target: ids.joined(separator: ","), detail: "terminate")
        let user = principal.user
        let job = try await blocking { try catalog.createTerminateJob(instances: ids, requestedBy: user) }
        context.audit.set(detail: "job \(job.id): terminate")
        return seeOther("/jobs/\(HTML.component(job.id))")
    }
}
