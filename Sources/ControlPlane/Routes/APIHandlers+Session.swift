import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import NIOCore

extension APIHandlers {
    func registerSession(_ add: Add) {
        add(.get, "/api/v1/health") { _, _, _ in
            try JSONBody.response(Health(status: "ok", version: version))
        }

        add(.get, "/api/v1/openapi.json") { _, _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "application/json; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.bytes))
            )
        }

        add(.post, "/api/v1/login") { request, context, _ in
            try await login(request, context: context)
        }

        add(.post, "/api/v1/logout") { request, context, principal in
            let principal = principal!
            if try Self.isDryRun(request) {
                throw APIError(.badRequest, "request.no-dry-run", "a logout cannot be a dry run: it only ends this session or token")
            }
            try await blocking { _ = try catalog.revokeAccessToken(id: principal.tokenId) }
            context.audit.set(target: "token \(principal.tokenId)")
            var response = try JSONBody.response(["loggedOut": true])
            if principal.method == "session" {
                response.setCookie(Self.sessionCookie(value: "", maxAge: 0))
            }
            return response
        }

        add(.get, "/api/v1/me") { _, _, principal in
            let p = principal!
            return try JSONBody.response(
                MeDTO(
                    user: p.user,
                    roles: p.roles.sorted(),
                    permissions: Permission.allCases.filter { $0.granted(to: p.roles) },
                    authenticatedBy: p.method,
                    tokenId: p.tokenId,
                    expiresAt: p.expiresAt.rfc3339
                )
            )
        }
    }

    static func sessionCookie(value: String, maxAge: Int) -> Cookie {
        // The value is base64url (RFC 6265-safe), so validation cannot fail; the fallback expires the cookie.
        (try? Cookie.validated(
            name: API.sessionCookie,
            value: value,
            maxAge: maxAge,
            path: "/",
            secure: true,
            httpOnly: true,
            sameSite: .strict
        )) ?? Cookie(name: API.sessionCookie, value: "", maxAge: 0, path: "/", secure: true, httpOnly: true)
    }

    /// Checks a password under the login throttle: 429 `auth.throttled` while the name or the address is locked,
    /// 401 `auth.failed` for a wrong password, an unknown or disabled user. scrypt runs on its own two threads, so
    /// a flood of logins cannot take the threads that serve the catalog.
    func authenticatePassword(user: String, password: String, address: String, settings: ControlSettings) async throws -> UserRecord {
        if let wait = throttle.begin(
            user: user, address: address, limit: settings.loginFailuresBeforeLockout, windowSeconds: settings.lockoutSeconds
        ) {
            throw APIError(.tooManyRequests, "auth.throttled", "too many failed logins: try again in \(wait) s", headers: [.retryAfter: "\(wait)"])
        }
        let catalog = self.catalog
        let valid = !user.isEmpty && user.count <= 128 && password.count <= 1024
        let account = valid ? try await PasswordPool.run { try catalog.verifyPassword(user: user, password: password) } : nil
        guard let account else {
            metrics.loginFailed()
            throw APIError(.unauthorized, "auth.failed", "wrong user name or password (or the account is disabled)")
        }
        throttle.succeeded(user: user, address: address)
        // Expired sessions are dropped now and then (each login is a good moment).
        if Int.random(in: 0..<20) == 0 {
            let cutoff = self.now
            _ = try? await blocking { try catalog.deleteExpiredSessions(olderThan: cutoff) }
        }
        return account
    }

    /// `POST /login`: JSON `{user, password, token?}` or a form post (`user`, `password`) from the console.
    /// Throttled per user name and per address; every refusal is in the audit log.
    private func login(_ request: Request, context: APIRequestContext) async throws -> Response {
        var request = request
        let body: LoginRequest
        let contentType = request.headers[.contentType]?.lowercased() ?? ""
        if contentType.hasPrefix("application/x-www-form-urlencoded") {
            // A form can be posted from another site without a preflight: refuse that (login CSRF).
            if let site = request.headers[.init("Sec-Fetch-Site")!], site != "same-origin", site != "none" {
                throw APIError(.forbidden, "auth.cross-site", "log in from the console's own page, not from another site")
            }
            let buffer = try await request.collectBody(upTo: API.maxBodyBytes)
            let form: [String: String]
            do {
                form = try URLEncodedFormDecoder().decode([String: String].self, from: String(buffer: buffer))
            } catch {
                throw APIError(.badRequest, "request.invalid-form", "the login form could not be read: send user and password once each")
            }
            guard let user = form["user"], let password = form["password"] else {
                throw APIError(.badRequest, "request.invalid-field", "the login form needs user and password")
            }
            body = LoginRequest(user: user, password: password)
        } else {
            body = try await JSONBody.decode(LoginRequest.self, from: request)
        }
        context.audit.set(actor: body.user, target: "user \(body.user)", detail: body.token == nil ? "session" : "api token \(body.token!.name)")
        if try Self.isDryRun(request) {
            throw APIError(.badRequest, "request.no-dry-run", "a login cannot be a dry run: it only issues a session or a token")
        }
        let catalog = self.catalog
        let settings = try await blocking { try catalog.controlSettings() }
        let account = try await authenticatePassword(user: body.user, password: body.password, address: context.remoteAddress, settings: settings)
        if let token = body.token {
            try Self.checkTokenName(token.name)
            let days = token.days ?? 90
            guard (1...366).contains(days) else {
                throw APIError(.badRequest, "request.invalid-field", "token days must be 1 to 366, got \(days)")
            }
            let issued = try await blocking {
                try catalog.createAccessToken(user: account.name, name: token.name, kind: .api, validFor: Int64(days) * 86_400)
            }
            context.audit.set(target: "token \(issued.record.id)")
            return try JSONBody.response(IssuedTokenDTO(token: DTO.token(issued.record), secret: issued.secret), status: .created)
        }
        let hours = settings.sessionHours
        let issued = try await blocking {
            try catalog.createAccessToken(user: account.name, name: "browser session", kind: .session, validFor: Int64(hours) * 3600)
        }
        context.audit.set(target: "session \(issued.record.id)")
        var response = try JSONBody.response(
            SessionDTO(
                user: account.name,
                roles: account.roles.sorted(),
                csrfToken: issued.csrf ?? "",
                expiresAt: issued.record.expiresAt.rfc3339
            ),
            status: .created
        )
        response.setCookie(Self.sessionCookie(value: issued.secret, maxAge: hours * 3600))
        return response
    }
}
