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
            response = try await next(request, context)
        } catch let error as APIError {
            errorCode = error.code
            response = try error.response(from: request, context: context)
        } catch let error as LifeboatError {
            let api = APIError.from(error)
            errorCode = api.code
            if api.status == .internalServerError {
                logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error.detailedDescription())"])
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
        response.headers[.init("Referrer-Policy")!] = "no-referrer"
        response.headers[.strictTransportSecurity] = "max-age=31536000"

        if request.method != .get && request.method != .head && request.method != .options && !context.isProbe {
            await record(request, context: context, response: response, errorCode: errorCode)
        }
        return response
    }

    private func record(_ request: Request, context: Context, response: Response, errorCode: String?) async {
        let named = context.audit.actor ?? context.principal?.user ?? ""
        let actor = named.isEmpty ? "anonymous" : named
        // Hummingbird names the route of an unknown path "NotFound": record the path asked for instead.
        let template = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? request.uri.path
        let action = "\(request.method) \(template)"
        let target = context.audit.target ?? request.uri.path
        let result = "\(response.status.code)" + (errorCode.map { " \($0)" } ?? "")
        let detail = context.audit.detail ?? ""
        let source = context.remoteAddress
        do {
            _ = try await Blocking.run {
                try catalog.appendAudit(actor: actor, action: action, target: target, source: source, result: result, detail: detail)
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
            guard RouteTable.isPublic(method: request.method.rawValue, path: context.endpointPath) || !Self.isAPI(request) else {
                throw error
            }
            authenticated = context
        }
        return try await next(request, authenticated)
    }

    /// The REST API and metrics (JSON errors, CSRF in a header) as opposed to the console's pages.
    static func isAPI(_ request: Request) -> Bool {
        request.uri.path.hasPrefix("/api/") || request.uri.path == "/metrics"
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
                context.audit.set(actor: "anonymous (expired session)")
                throw APIError(.unauthorized, "auth.session-expired", "your session has ended: log in again")
            }
            // The console's forms carry the token as a field, which its handlers check.
            if request.method != .get && request.method != .head && request.method != .options && Self.isAPI(request) {
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
