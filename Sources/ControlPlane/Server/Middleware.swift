import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import Logging

/// The outermost middleware: turns every failure into a JSON error, adds security headers, and writes every
/// state-changing request (and every refused login) to the hash-chained audit log with who, when, what, from
/// where and the result.
struct OutcomeMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let catalog: Catalog
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        var errorCode: String?
        do {
            // Fail closed: a change that could not be recorded is not made.
            if request.method != .get && request.method != .head && request.method != .options,
                try await !Blocking.run({ [catalog] in try catalog.auditRecordable() })
            {
                throw APIError(
                    .serviceUnavailable, "audit.damaged",
                    "the audit log's head is missing (the catalog was changed outside Lifeboat): nothing can be changed until the catalog is restored from a backup; `lifeboat audit verify` shows what was changed"
                )
            }
            response = try await next(request, context)
        } catch let error as APIError {
            errorCode = error.code
            response = try error.response(from: request, context: context)
        } catch let error as LifeboatError {
            var api = APIError.from(error)
            errorCode = api.code
            if api.status == .internalServerError {
                logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error.detailedDescription())"])
                // Paths and database messages stay in the server's log.
                api.message = "the server could not complete the request (\(api.code)): its log has the details"
            }
            response = try api.response(from: request, context: context)
        } catch let error as any HTTPResponseError {
            var status = error.status
            let code: String
            let message: String
            var allow: [String] = []
            switch status {
            case .notFound where !RouteTable.methods(forPath: request.uri.path).isEmpty:
                allow = RouteTable.methods(forPath: request.uri.path)
                status = .methodNotAllowed
                code = "route.method"
                message = "\(request.method) is not allowed on \(request.uri.path): use \(allow.joined(separator: ", ")) (see /api/v1/openapi.json)"
            case .notFound:
                code = "route.unknown"
                message = "no such endpoint: \(request.method) \(request.uri.path) (see /api/v1/openapi.json)"
            case .methodNotAllowed:
                code = "route.method"
                message = "\(request.method) is not allowed on \(request.uri.path) (see /api/v1/openapi.json)"
            case .contentTooLarge:
                code = "request.too-large"
                message = "the request body is larger than \(API.maxBodyBytes / 1024) KiB"
            default:
                code = "request.invalid"
                message = (error as? HTTPError)?.body ?? "the request was refused (\(status.code))"
            }
            errorCode = code
            response = APIError.jsonResponse(status: status, body: APIErrorBody(code: code, message: message, status: Int(status.code)))
            if !allow.isEmpty { response.headers[.allow] = allow.joined(separator: ", ") }
        } catch {
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            errorCode = "server.internal"
            response = APIError.jsonResponse(
                status: .internalServerError,
                body: APIErrorBody(code: "server.internal", message: "the server failed to answer: see its log", status: 500)
            )
        }
        response.headers[.init("X-Content-Type-Options")!] = "nosniff"
        response.headers[.init("X-Frame-Options")!] = "DENY"
        response.headers[.init("Referrer-Policy")!] = "same-origin"
        response.headers[.strictTransportSecurity] = "max-age=31536000"

        if request.method != .get && request.method != .head && request.method != .options && !context.isProbe
            && Self.worthRecording(context: context, errorCode: errorCode)
        {
            await record(request, context: context, response: response, errorCode: errorCode ?? context.audit.errorCode)
        }
        return response
    }

    /// Every request that changes state is recorded, and every refusal of someone who logged in, and every failed
    /// login. Not recorded, so that anonymous noise cannot flood the log: requests without credentials to routes
    /// that need them (401), unknown routes asked anonymously, and logins refused by the throttle (the failures
    /// that caused the lock are in the log).
    static func worthRecording(context: Context, errorCode: String?) -> Bool {
        if errorCode == "auth.throttled" { return false }
        // The authentication middleware (inside this one) names the caller in the note; a login names who tried.
        if context.audit.actor != nil { return true }
        return context.endpointPath == "/api/v1/login" || context.endpointPath == "/login"
    }

    /// Fields are cut to a length a person reads, so that a huge value in a request cannot bloat the log.
    static func clip(_ text: String, _ limit: Int = 256) -> String {
        text.count <= limit ? text : String(text.prefix(limit)) + "…"
    }

    private func record(_ request: Request, context: Context, response: Response, errorCode: String?) async {
        let named = context.audit.actor ?? context.principal?.user ?? ""
        let actor = named.isEmpty ? "anonymous" : named
        // Hummingbird names the route of an unknown path "NotFound": record the path asked for instead.
        let template = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? request.uri.path
        let action = "\(request.method) \(template)"
        let target = context.audit.target ?? request.uri.path
        let result = "\(response.status.code)" + (errorCode.map { " \($0)" } ?? "")
        let detail = Self.clip(context.audit.detail ?? "", 1024)
        let source = context.remoteAddress
        do {
            _ = try await Blocking.run {
                try catalog.appendAudit(
                    actor: Self.clip(actor), action: Self.clip(action), target: Self.clip(target), source: source, result: result,
                    detail: detail
                )
            }
        } catch {
            // The request's effect already happened: the failure to record it must be loud.
            logger.critical("could not write the audit log", metadata: ["action": "\(action)", "error": "\(error)"])
        }
    }
}

/// Finds the caller: an API token (`Authorization: Bearer lbk1_…`) or the session cookie. A presented but
/// invalid credential is refused at once (401) rather than treated as anonymous. Requests authenticated by
/// the cookie that change state must carry the session's CSRF token in `X-CSRF-Token`.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let catalog: Catalog

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let authenticated: Context
        do {
            authenticated = try await authenticate(request, context: context)
        } catch let error as APIError where error.status == .unauthorized || error.code == "auth.csrf" {
            // A stale cookie or token must not stand between a person and the login form or the health check.
            // The console's pages handle "not logged in" themselves (a redirect to the login page).
            guard RouteTable.isPublic(method: request.method.rawValue, path: context.endpointPath) || !Self.isAPI(request, context) else {
                throw error
            }
            authenticated = context
        }
        return try await next(request, authenticated)
    }

    /// The REST API and metrics (JSON errors, CSRF in a header) as opposed to the console's pages — decided by
    /// the route the router matched, not the raw path (`//api/v1/users` reaches `/api/v1/users`), and a path no
    /// console route matched counts as API (the strict side).
    static func isAPI(_ request: Request, _ context: APIRequestContext) -> Bool {
        guard let route = context.endpointPath, route != "NotFound" else { return true }
        return route.hasPrefix("/api/") || route == "/metrics"
    }

    private func authenticate(_ request: Request, context: Context) async throws -> Context {
        var context = context
        if context.principal != nil { return context }  // the access check's probes come with their principal
        if let header = request.headers[.authorization] {
            guard header.lowercased().hasPrefix("bearer ") else {
                throw APIError(.unauthorized, "auth.invalid-token", "send the API token as `Authorization: Bearer TOKEN`")
            }
            let secret = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            // A session's secret is for the cookie (with CSRF), never a bearer token.
            guard let found = try await Blocking.run({ try catalog.authenticate(secret: secret) }), found.token.kind == .api else {
                throw APIError(
                    .unauthorized,
                    "auth.invalid-token",
                    "the API token is unknown, expired or revoked: log in again (`lifeboat login`)"
                )
            }
            context.principal = Principal(
                user: found.user.name, roles: found.user.roles, method: "token", tokenId: found.token.id,
                expiresAt: found.token.expiresAt
            )
            context.audit.set(actor: found.user.name)
        } else if let cookie = request.cookies[API.sessionCookie]?.value {
            guard let found = try await Blocking.run({ try catalog.authenticate(secret: cookie) }),
                found.token.kind == .session
            else {
                throw APIError(.unauthorized, "auth.session-expired", "your session has ended: log in again")
            }
            // The console's forms carry the token as a field, which its handlers check.
            if request.method != .get && request.method != .head && request.method != .options && Self.isAPI(request, context) {
                let presented = request.headers[.init(API.csrfHeader)!] ?? ""
                guard let csrf = found.csrf, ConstantTime.equal(presented, csrf) else {
                    throw APIError(
                        .forbidden,
                        "auth.csrf",
                        "this request needs the session's CSRF token in the \(API.csrfHeader) header (reload the page)"
                    )
                }
            }
            context.audit.set(actor: found.user.name)
            context.principal = Principal(
                user: found.user.name, roles: found.user.roles, method: "session", tokenId: found.token.id,
                expiresAt: found.token.expiresAt, csrf: found.csrf
            )
        }
        return context
    }
}
