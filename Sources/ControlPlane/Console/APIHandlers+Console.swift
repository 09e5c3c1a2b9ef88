import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import NIOCore

/// The web console: server-rendered pages on the same server and catalog as the API, a browser session
/// (cookie) for login, the session's CSRF token in every form. The server enforces roles on every action;
/// the pages only leave out what a user's roles do not allow.
extension APIHandlers {
    typealias PageHandler = @Sendable (Request, APIRequestContext, Principal) async throws -> Response

    func registerConsole(on router: Router<APIRequestContext>) {
        router.get("/") { _, _ in seeOther("/machines") }
        router.get("/assets/console.css") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/css; charset=utf-8", .cacheControl: "max-age=300"], body: .init(byteBuffer: ByteBuffer(string: ConsoleAssets.css)))
        }
        router.get("/assets/console.js") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "max-age=300"], body: .init(byteBuffer: ByteBuffer(string: ConsoleAssets.js)))
        }
        router.get("/login") { request, context in
            let next = Self.safeNext(Self.query(request, "next"))
            if context.principal?.method == "session" { return seeOther(next) }
            return loginPage(error: Self.query(request, "error"), next: next).response()
        }
        router.post("/login") { request, context in try await consoleLogin(request, context: context) }
        router.post("/logout") { request, context in
            let form = try await ConsoleForm.read(request)
            if let principal = context.principal, principal.method == "session" {
                try Self.checkCSRF(form, principal)
                try await blocking { _ = try catalog.revokeAccessToken(id: principal.tokenId) }
            }
            var response = seeOther("/login")
            response.setCookie(Self.sessionCookie(value: "", maxAge: 0))
            return response
        }

        func page(_ path: String, _ permission: Permission, _ handler: @escaping PageHandler) {
            router.get(RouterPath(path)) { request, context in
                try await consoleGuard(request, context, permission, handler)
            }
        }
        func action(_ path: String, _ permission: Permission, _ handler: @escaping PageHandler) {
            router.post(RouterPath(path)) { request, context in
                try await consoleGuard(request, context, permission, handler)
            }
        }
        page("/machines", .read, machinesPage)
        action("/console/launch", .read, consoleLaunch)
        page("/jobs", .read, jobsPage)
        page("/jobs/{id}", .read, jobPage)
        page("/jobs/{id}/stream", .read, jobStream)
        page("/instances", .read, instancesPage)
        action("/console/terminate", .terminateInstances, consoleTerminate)
        page("/applications", .read, applicationsPage)
        page("/incidents", .read, incidentsPage)
        action("/console/incidents", .manageIncidents, consoleDeclare)
        action("/console/incidents/{id}/close", .manageIncidents, consoleClose)
        action("/console/incidents/{id}/notes", .writeNotes, consoleNote)
        page("/users", .readAudit, usersPage)
        action("/console/users", .administer, consoleCreateUser)
        action("/console/users/{name}", .administer, consoleUpdateUser)
        page("/audit", .readAudit, auditPage)
        page("/settings", .read, settingsPage)
        action("/console/settings", .administer, consoleSettings)
        action("/console/machines/{name}", .administer, consoleMachineSettings)
    }

    /// Logged in with a browser session and allowed `permission`, or a redirect to the login page; forms must
    /// carry the session's CSRF token. Failures become the page again with the error on top.
    private func consoleGuard(
        _ request: Request, _ context: APIRequestContext, _ permission: Permission, _ handler: PageHandler
    ) async throws -> Response {
        guard let principal = context.principal, principal.method == "session" else {
            let next = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
            return seeOther("/login?next=" + HTML.component(next))
        }
        guard principal.may(permission) else {
            context.audit.set(errorCode: "auth.forbidden")
            let held = principal.roles.sorted().map(\.rawValue).joined(separator: ", ")
            let needed = permission.allowed.sorted().map(\.rawValue).joined(separator: " or ")
            return ConsolePage(
                title: "Not allowed", active: "", principal: principal,
                flash: [("error", "Your roles (\(held)) do not allow this: it needs \(needed). Ask an admin.")],
                body: "<h1>Not allowed</h1>"
            ).response(status: .forbidden)
        }
        do {
            return try await handler(request, context, principal)
        } catch let error as APIError where error.status == .forbidden {
            context.audit.set(errorCode: error.code)
            return ConsolePage(title: "Not allowed", active: "", principal: principal, flash: [("error", error.message)], body: "<h1>Not allowed</h1>")
                .response(status: .forbidden)
        } catch let error as APIError {
            context.audit.set(errorCode: error.code)
            return try errorBack(request, principal, error.message)
        } catch let error as LifeboatError {
            context.audit.set(errorCode: error.code.rawValue)
            return try errorBack(request, principal, error.message)
        }
    }

    /// After a failed form post: back to the page it came from, with the message; a failed page: the message.
    private func errorBack(_ request: Request, _ principal: Principal, _ message: String) throws -> Response {
        if request.method == .post {
            let back = Self.safeNext(request.headers[.referer].flatMap { URL(string: $0) }.map { $0.path + ($0.query.map { "?" + $0 } ?? "") })
            let base = back.split(separator: "?").first.map(String.init) ?? "/machines"
            return seeOther(base + "?error=" + HTML.component(message))
        }
        return ConsolePage(title: "Error", active: "", principal: principal, flash: [("error", message)], body: "<h1>Something went wrong</h1>")
            .response(status: .badRequest)
    }

    /// Only local paths after login (no open redirect).
    static func safeNext(_ next: String?) -> String {
        // A local path of plain characters only: no scheme, no `//`, no backslash, no whitespace or control
        // characters (browsers drop tabs and newlines from URLs, which would turn `/\t/evil` into `//evil`).
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_.~?=&%+")
        guard let next, next.hasPrefix("/"), !next.hasPrefix("//"), next.count <= 512, next.allSatisfy({ allowed.contains($0) }) else {
            return "/machines"
        }
        return next
    }

    static func checkCSRF(_ form: ConsoleForm, _ principal: Principal) throws {
        guard let presented = form.value("csrf"), let csrf = principal.csrf, ConstantTime.equal(presented, csrf) else {
            throw APIError(.forbidden, "auth.csrf", "the form has expired (missing CSRF token): reload the page and try again")
        }
    }

    /// Flash messages from `?error=` / `?ok=` after a redirect.
    static func flash(_ request: Request) -> [(kind: String, text: String)] {
        var out: [(String, String)] = []
        if let e = query(request, "error") { out.append(("error", e)) }
        if let o = query(request, "ok") { out.append(("ok", o)) }
        return out
    }

    func loginPage(error: String?, next: String) -> ConsolePage {
        ConsolePage(
            title: "Log in", active: "", principal: nil, flash: error.map { [("error", $0)] } ?? [],
            body: """
                <div class="card" style="max-width:420px;margin:2rem auto">
                <h1>Log in to Lifeboat</h1>
                <form method="post" action="/login">
                <input type="hidden" name="next" value="\(HTML.escape(next))">
                <p><label for="user">User name</label><input id="user" name="user" type="text" autocomplete="username" required autofocus></p>
                <p><label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required></p>
                <button class="primary" type="submit">Log in</button>
                </form></div>
                """
        )
    }

    /// The login form: the same checks and throttling as `POST /api/v1/login`, then a session cookie.
    private func consoleLogin(_ request: Request, context: APIRequestContext) async throws -> Response {
        let form = try await ConsoleForm.read(request)
        let next = Self.safeNext(form.value("next"))
        let user = form.value("user") ?? ""
        let password = form.value("password") ?? ""
        context.audit.set(actor: user.isEmpty ? "anonymous" : user, target: "user \(user)", detail: "console session")
        // Login CSRF: a form posted from another site would log the victim into someone else's account.
        if let site = request.headers[.init("Sec-Fetch-Site")!], site != "same-origin", site != "none" {
            context.audit.set(errorCode: "auth.cross-site")
            return loginPage(error: "Log in from this page, not from another site.", next: "/machines").response(status: .forbidden)
        }
        let catalog = self.catalog
        let settings = try await blocking { try catalog.controlSettings() }
        let account: UserRecord
        do {
            account = try await authenticatePassword(user: user, password: password, address: context.remoteAddress, settings: settings)
        } catch let error as APIError {
            context.audit.set(errorCode: error.code)
            return loginPage(error: error.message.prefix(1).uppercased() + error.message.dropFirst() + ".", next: next)
                .response(status: error.status)
        }
        let hours = settings.sessionHours
        let issued = try await blocking {
            try catalog.createAccessToken(user: account.name, name: "browser session", kind: .session, validFor: Int64(hours) * 3600)
        }
        context.audit.set(target: "session \(issued.record.id)")
        var response = seeOther(next)
        response.setCookie(Self.sessionCookie(value: issued.secret, maxAge: hours * 3600))
        return response
    }
}
