public import LifeboatCore

/// One endpoint: method, path (OpenAPI style, `{name}` for parameters) and the permission it needs.
extension Array where Element == String {
    fileprivate func uniquedInOrder() -> [String] {
        var seen = Set<String>()
        return filter { seen.insert($0).inserted }
    }
}

public struct RouteSpec: Sendable, Hashable, CustomStringConvertible {
    public var method: String
    public var path: String
    /// nil: answered without a login.
    public var permission: Permission?
    /// For a route whose permission depends on the body: what it additionally needs in that case.
    public var note: String?

    public var description: String { "\(method) \(path)" }
}

/// Every route of the API. `API.register` refuses to start if a handler is missing here or an entry has none.
enum RouteTable {
    static let all: [RouteSpec] = [
        spec("GET", "/api/v1/health", nil),
        spec("GET", "/api/v1/openapi.json", nil),
        spec("POST", "/api/v1/login", nil),
        spec("POST", "/api/v1/logout", .read),
        spec("GET", "/api/v1/me", .read),

        spec("GET", "/api/v1/machines", .read),
        spec("GET", "/api/v1/machines/{name}", .read),
        spec("PATCH", "/api/v1/machines/{name}", .administer),
        spec("DELETE", "/api/v1/machines/{name}", .administer),
        spec("POST", "/api/v1/machines/{name}/pause", .administer),
        spec("POST", "/api/v1/machines/{name}/resume", .administer),
        spec("GET", "/api/v1/machines/{name}/points", .read),
        spec("GET", "/api/v1/machines/{name}/volumes", .read),

        spec("POST", "/api/v1/launches", .launchDrill, note: "mode RECOVERY needs launch-recovery and an open incident"),
        spec("GET", "/api/v1/jobs", .read),
        spec("GET", "/api/v1/jobs/{id}", .read),
        spec("GET", "/api/v1/jobs/{id}/events", .read),
        spec("GET", "/api/v1/instances", .read),
        spec("GET", "/api/v1/instances/{id}", .read),
        spec("POST", "/api/v1/terminations", .terminateInstances),

        spec("GET", "/api/v1/applications", .read),
        spec("POST", "/api/v1/applications", .administer),
        spec("GET", "/api/v1/applications/{name}", .read),
        spec("PATCH", "/api/v1/applications/{name}", .administer),
        spec("DELETE", "/api/v1/applications/{name}", .administer),

        spec("GET", "/api/v1/incidents", .read),
        spec("POST", "/api/v1/incidents", .manageIncidents),
        spec("GET", "/api/v1/incidents/{id}", .read),
        spec("POST", "/api/v1/incidents/{id}/close", .manageIncidents),
        spec("POST", "/api/v1/incidents/{id}/notes", .writeNotes),

        spec("GET", "/api/v1/users", .readAudit),
        spec("POST", "/api/v1/users", .administer),
        spec("GET", "/api/v1/users/{name}", .readAudit),
        spec("PATCH", "/api/v1/users/{name}", .administer),
        spec("DELETE", "/api/v1/users/{name}", .administer),
        spec("GET", "/api/v1/tokens", .read, note: "others' tokens need read-audit"),
        spec("POST", "/api/v1/tokens", .read),
        spec("DELETE", "/api/v1/tokens/{id}", .read, note: "others' tokens need administer"),
        spec("GET", "/api/v1/enrollment-tokens", .administer),
        spec("POST", "/api/v1/enrollment-tokens", .administer),

        spec("GET", "/api/v1/settings", .read),
        spec("PATCH", "/api/v1/settings", .administer),
        spec("GET", "/api/v1/audit", .readAudit),
        spec("GET", "/api/v1/audit/verify", .readAudit),
        spec("GET", "/api/v1/access", .readAudit),
        spec("GET", "/api/v1/access/check", .readAudit),
        spec("GET", "/metrics", .read),
    ]

    /// The methods the API answers on a concrete path (`/api/v1/users/alice` matches `/api/v1/users/{name}`).
    static func methods(forPath path: String) -> [String] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        return all.filter { spec in
            let pattern = spec.path.split(separator: "/", omittingEmptySubsequences: false)
            guard pattern.count == segments.count else { return false }
            return zip(pattern, segments).allSatisfy { p, s in (p.hasPrefix("{") && p.hasSuffix("}") && !s.isEmpty) || p == s }
        }.map(\.method).uniquedInOrder()
    }

    /// Whether the route answers without a login.
    static func isPublic(method: String, path: String?) -> Bool {
        guard let path else { return false }
        return all.contains { $0.method == method && $0.path == path && $0.permission == nil }
    }

    private static func spec(_ method: String, _ path: String, _ permission: Permission?, note: String? = nil) -> RouteSpec {
        RouteSpec(method: method, path: path, permission: permission, note: note)
    }
}
