import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import Logging
import NIOCore
import NIOEmbedded
import Synchronization

/// `lifeboat access check`: for every role, its holders, each verified live — the article's "verify that the
/// people in these roles have the pre-provisioned access they need". Each holder's probes go through the real
/// router and middleware as that user (read-only requests and `dryRun` requests that change nothing); a probe
/// passes when the API did not refuse it for lack of authority (a 404 for a probe's placeholder id or a
/// "no machines yet" 400 still shows the holder may act).
struct AccessCheck: Sendable {
    struct Probe: Sendable {
        var purpose: String
        var method: HTTPRequest.Method
        var path: String
        var body: String?
    }

    let catalog: Catalog
    let throttle: LoginThrottle
    let responder: ResponderBox

    /// The probes that show a holder of `role` can do what the role is for.
    static func probes(for role: Role, openIncident: String?) -> [Probe] {
        let incident = openIncident ?? "inc-0000000000000000"
        switch role {
        case .analyst:
            return [
                Probe(purpose: "read machines and recovery points", method: .get, path: "/api/v1/machines?limit=1"),
                Probe(purpose: "read the audit log", method: .get, path: "/api/v1/audit?limit=1"),
                Probe(
                    purpose: "write a report on an incident", method: .post, path: "/api/v1/incidents/\(incident)/notes",
                    body: #"{"kind":"REPORT","text":"access check","dryRun":true}"#
                ),
            ]
        case .decider:
            return [
                Probe(purpose: "read incidents", method: .get, path: "/api/v1/incidents"),
                Probe(
                    purpose: "declare an incident", method: .post, path: "/api/v1/incidents",
                    body: #"{"title":"access check","severity":"LOW","dryRun":true}"#
                ),
                Probe(
                    purpose: "close an incident", method: .post, path: "/api/v1/incidents/\(incident)/close",
                    body: #"{"summary":"access check","dryRun":true}"#
                ),
            ]
        case .operator:
            return [
                Probe(purpose: "launch a drill", method: .post, path: "/api/v1/launches", body: #"{"mode":"TEST","all":true,"dryRun":true}"#),
                Probe(
                    purpose: "launch a recovery (under an open incident)", method: .post, path: "/api/v1/launches",
                    body: #"{"mode":"RECOVERY","all":true,"dryRun":true}"#
                ),
                Probe(
                    purpose: "terminate recovery instances", method: .post, path: "/api/v1/terminations",
                    body: #"{"instances":["ri-0000000000000000"],"dryRun":true}"#
                ),
            ]
        case .admin:
            return [
                Probe(purpose: "read users", method: .get, path: "/api/v1/users"),
                Probe(purpose: "change settings", method: .patch, path: "/api/v1/settings", body: #"{"dryRun":true}"#),
                Probe(
                    purpose: "create users", method: .post, path: "/api/v1/users",
                    body: #"{"name":"access-check-probe","password":"access-check-probe-password","roles":["analyst"],"dryRun":true}"#
                ),
            ]
        }
    }

    func run(logger: Logger) async throws -> AccessCheckDTO {
        let (users, open) = try await Blocking.run { (try catalog.users(), try catalog.openIncidents()) }
        var roles: [AccessRoleCheckDTO] = []
        for role in Role.allCases {
            let holders = users.filter { $0.isActive && $0.roles.contains(role) }
            var checks: [AccessHolderCheckDTO] = []
            for user in holders {
                var problems: [String] = []
                if let wait = throttle.retryAfter(user: user.name) {
                    problems.append("locked out after failed logins for another \(wait) s")
                }
                var probes: [AccessProbeDTO] = []
                for probe in Self.probes(for: role, openIncident: open.first?.id) {
                    probes.append(try await run(probe, as: user, logger: logger))
                }
                let ok = problems.isEmpty && probes.allSatisfy(\.ok)
                checks.append(AccessHolderCheckDTO(user: user.name, ok: ok, probes: probes, problems: problems))
            }
            roles.append(
                AccessRoleCheckDTO(
                    role: role,
                    summary: role.summary,
                    permissions: Permission.allCases.filter { $0.allowed.contains(role) },
                    holders: checks,
                    problems: holders.isEmpty ? ["nobody holds this role: an admin gives it to someone (`lifeboat users set NAME --roles …`)"] : []
                )
            )
        }
        let ok = roles.allSatisfy { $0.problems.isEmpty && $0.holders.allSatisfy(\.ok) }
        return AccessCheckDTO(ok: ok, roles: roles)
    }

    private func run(_ probe: Probe, as user: UserRecord, logger: Logger) async throws -> AccessProbeDTO {
        guard let responder = responder.value else {
            throw APIError(.serviceUnavailable, "server.starting", "the API is still starting: try again")
        }
        var fields = HTTPFields()
        if probe.body != nil { fields[.contentType] = "application/json" }
        let head = HTTPRequest(method: probe.method, scheme: "https", authority: "access-check", path: probe.path, headerFields: fields)
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer(string: probe.body ?? "")))
        var context = APIRequestContext(source: ApplicationRequestContextSource(channel: EmbeddedChannel(), logger: logger))
        context.isProbe = true
        context.principal = Principal(
            user: user.name, roles: user.roles, method: "access-check", tokenId: "-", expiresAt: Timestamp(seconds: 0)
        )
        let response = try await responder.respond(to: request, context: context)
        var code: String?
        if response.status.code >= 400 {
            let collector = BodyCollector()
            try await response.body.write(CollectingWriter(collector: collector))
            let collected = collector.buffer.withLock { $0 }
            code = (try? JSONDecoder().decode(APIErrorBody.self, from: Data(collected.readableBytesView)))?.error.code
        }
        let refused = response.status == .unauthorized || (response.status == .forbidden && (code?.hasPrefix("auth.") ?? true))
        return AccessProbeDTO(
            purpose: probe.purpose,
            method: probe.method.rawValue,
            path: probe.path,
            dryRun: probe.body?.contains("\"dryRun\":true") ?? false,
            status: Int(response.status.code),
            code: code,
            ok: !refused && response.status.code < 500
        )
    }
}

/// The router's responder, set once the application is built (the access check dispatches through it).
final class ResponderBox: Sendable {
    private let storage = Mutex<RouterResponder<APIRequestContext>?>(nil)
    var value: RouterResponder<APIRequestContext>? { storage.withLock { $0 } }
    func set(_ responder: RouterResponder<APIRequestContext>) { storage.withLock { $0 = responder } }
}

/// Collects a response body written by Hummingbird.
private final class BodyCollector: Sendable {
    let buffer = Mutex(ByteBuffer())
}

private struct CollectingWriter: ResponseBodyWriter {
    let collector: BodyCollector
    mutating func write(_ chunk: ByteBuffer) async throws {
        var chunk = chunk
        collector.buffer.withLock { _ = $0.writeBuffer(&chunk) }
    }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
