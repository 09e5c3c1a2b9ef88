import Foundation
public import HTTPTypes
public import Hummingbird
import LifeboatAPI
import LifeboatCore

/// An error answer of the API: a status, a stable code and a message a person can act on. Every failure a
/// route meets becomes one (`ErrorMiddleware`), so clients always get `{"error": {...}}`.
public struct APIError: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// Extra headers of the answer (e.g. `Retry-After`).
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = APIError.jsonResponse(status: status, body: APIErrorBody(code: code, message: message, status: Int(status.code)))
        for field in headers { response.headers.append(field) }
        return response
    }

    static func jsonResponse(status: HTTPResponse.Status, body: APIErrorBody) -> Response {
        let data = (try? JSONEncoder().encode(body)) ?? Data("{}".utf8)
        return Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    static func unauthenticated(_ message: String = "log in first: POST /api/v1/login, or send an API token as `Authorization: Bearer TOKEN` (`lifeboat login`)") -> APIError {
        APIError(.unauthorized, "auth.required", message)
    }

    static func notFound(_ what: String, _ name: String) -> APIError {
        APIError(.notFound, "\(what).unknown", "there is no \(what) '\(name)'")
    }

    /// Maps a domain error to a status by its code: unknown things are 404, conflicts 409, the rest 400.
    static func from(_ error: LifeboatError) -> APIError {
        let code = error.code.rawValue
        let status: HTTPResponse.Status
        switch code {
        case _ where code.hasSuffix(".unknown") || code.hasPrefix("store.unknown"): status = .notFound
        case _ where code.hasSuffix(".exists"), "user.last-admin", "application.in-use", "incident.closed", "instance.terminated", "instance.busy",
            "launch.no-point", "launch.nothing-protected", "launch.incident-ambiguous", "application.empty", "store.no-consistent-point",
            "launch.selection-changed":
            status = .conflict
        case "launch.incident-required": status = .forbidden
        case _ where code.hasPrefix("catalog.") || code.hasPrefix("system.") || ["store.corrupt", "store.io", "store.locked"].contains(code):
            status = .internalServerError
        default: status = .badRequest
        }
        return APIError(status, code, error.message)
    }
}
