import Catalog
import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import Logging
import StagingStore
import Synchronization

/// The API's handlers and what they share: the catalog, the store (to resolve recovery points), the login
/// throttle, the metrics. Routes are registered through `add`, which enforces the route table's permission.
struct APIHandlers: Sendable {
    let catalog: Catalog
    let store: Store
    let metrics: ControlPlaneMetrics
    let version: String
    let enrollmentFingerprint: String?
    let clock: any WallClock
    let logger: Logger
    let throttle: LoginThrottle
    let responder = ResponderBox()
    let auditVerifier = AuditVerifier()

    init(
        catalog: Catalog, store: Store, metrics: ControlPlaneMetrics, version: String, enrollmentFingerprint: String?,
        clock: any WallClock, logger: Logger
    ) {
        self.enrollmentFingerprint = enrollmentFingerprint
        self.catalog = catalog
        self.store = store
        self.metrics = metrics
        self.version = version
        self.clock = clock
        self.logger = logger
        self.throttle = LoginThrottle(clock: clock)
    }

    /// The console's audit page shows the chain's state on every view: the whole chain is verified again when
    /// the log grew or a minute has passed (`GET /api/v1/audit/verify` always verifies it whole).
    final class AuditVerifier: Sendable {
        private let last = Mutex<(count: Int, at: ContinuousClock.Instant, result: AuditVerification)?>(nil)

        func verify(_ catalog: Catalog) throws -> AuditVerification {
            let count = try catalog.auditCount()
            if let cached = last.withLock({ $0 }), cached.count == count, ContinuousClock.now - cached.at < .seconds(60) {
                return cached.result
            }
            let result = try catalog.verifyAudit()
            last.withLock { $0 = (count, ContinuousClock.now, result) }
            return result
        }
    }

    typealias Handler = @Sendable (Request, APIRequestContext, Principal?) async throws -> Response

    func register(on router: Router<APIRequestContext>) {
        let registered = Mutex<Set<String>>([])
        func add(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping Handler) {
            guard let spec = RouteTable.all.first(where: { $0.method == method.rawValue && $0.path == path }) else {
                preconditionFailure("route \(method) \(path) is missing from RouteTable")
            }
            registered.withLock { _ = $0.insert(spec.description) }
            router.on(RouterPath(path), method: method) { request, context -> Response in
                guard let permission = spec.permission else { return try await handler(request, context, context.principal) }
                guard let principal = context.principal else { throw APIError.unauthenticated() }
                try Self.require(permission, principal)
                return try await handler(request, context, principal)
            }
        }
        registerSession(add)
        registerMachines(add)
        registerLaunches(add)
        registerPlan(add)
        registerPeople(add)
        registerAudit(add)
        let missing = RouteTable.all.map(\.description).filter { !registered.withLock { $0 }.contains($0) }
        precondition(missing.isEmpty, "routes without handlers: \(missing)")
    }

    typealias Add = (HTTPRequest.Method, String, @escaping Handler) -> Void

    /// - Throws: 403 `auth.forbidden` naming the roles that would allow it.
    static func require(_ permission: Permission, _ principal: Principal) throws {
        guard principal.may(permission) else {
            let held = principal.roles.sorted().map(\.rawValue).joined(separator: ", ")
            let needed = permission.allowed.sorted().map(\.rawValue).joined(separator: " or ")
            throw APIError(
                .forbidden,
                "auth.forbidden",
                "\(principal.user) (roles: \(held.isEmpty ? "none" : held)) may not \(permission.rawValue): it needs the role \(needed) — ask an admin"
            )
        }
    }

    /// Runs synchronous catalog or store work off the cooperative pool.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await Blocking.run(body)
    }

    var now: Timestamp { clock.now() }

    // MARK: query helpers

    static func query(_ request: Request, _ name: String) -> String? {
        request.uri.queryParameters[name[...]].map(String.init)
    }

    /// `limit` (1…500, default 50) and `offset` (≥ 0) from the query.
    static func paging(_ request: Request) throws -> (offset: Int, limit: Int) {
        var limit = API.defaultPageSize
        var offset = 0
        if let text = query(request, "limit") {
            guard let value = Int(text), (1...API.maxPageSize).contains(value) else {
                throw APIError(.badRequest, "request.invalid-query", "limit must be a whole number from 1 to \(API.maxPageSize), got '\(text)'")
            }
            limit = value
        }
        if let text = query(request, "offset") {
            guard let value = Int(text), value >= 0, value <= 100_000_000 else {
                throw APIError(.badRequest, "request.invalid-query", "offset must be a whole number ≥ 0, got '\(text)'")
            }
            offset = value
        }
        return (offset, limit)
    }

    static func page<T, U: Codable & Sendable>(
        _ all: [T], _ paging: (offset: Int, limit: Int), _ transform: (T) throws -> U
    ) rethrows -> Page<U> {
        let start = min(paging.offset, all.count)
        let end = min(start + paging.limit, all.count)
        return Page(items: try all[start..<end].map(transform), total: all.count, offset: paging.offset, limit: paging.limit)
    }

    /// True when the request asks only to check (`?dryRun=true` or `"dryRun": true` in the body).
    static func isDryRun(_ request: Request, body: Bool? = nil) throws -> Bool {
        try flag(request, "dryRun") || body == true
    }

    /// A boolean query flag: `true`/`1`, `false`/`0`, or absent (false); anything else is a 400.
    static func flag(_ request: Request, _ name: String) throws -> Bool {
        guard let text = query(request, name) else { return false }
        switch text {
        case "true", "1": return true
        case "false", "0": return false
        default: throw APIError(.badRequest, "request.invalid-query", "\(name) must be true or false, got '\(text)'")
        }
    }

    /// A path parameter, percent-decoded (`crm%3Aeu` → `crm:eu`).
    static func parameter(_ context: APIRequestContext, _ name: String) throws -> String {
        guard let raw = context.parameters.get(name), let value = raw.removingPercentEncoding, !value.isEmpty else {
            throw APIError(.badRequest, "request.invalid-path", "the path needs a \(name) (percent-encoded UTF-8)")
        }
        return value
    }

    static func dryRun(_ text: String) throws -> Response {
        try JSONBody.response(DryRunResult(wouldDo: text))
    }
}
