public import Hummingbird
public import LifeboatCore
import NIOCore
import Synchronization

/// Who made a request, as established by `AuthenticationMiddleware` from an API token or a session cookie.
public struct Principal: Sendable {
    public var user: String
    public var roles: Set<Role>
    /// `token` (an API token in `Authorization: Bearer`) or `session` (the browser's cookie).
    public var method: String
    public var tokenId: String
    public var expiresAt: Timestamp
    /// The session's CSRF token (sessions only): the console puts it in its forms.
    public var csrf: String? = nil

    public func may(_ permission: Permission) -> Bool { permission.granted(to: roles) }
}

/// What a handler tells the audit middleware about the request it served (a class so that what the handler
/// writes reaches the middleware that called it).
final class AuditNote: Sendable {
    private let state = Mutex<(actor: String?, target: String?, detail: String?, errorCode: String?)>((nil, nil, nil, nil))

    func set(actor: String? = nil, target: String? = nil, detail: String? = nil, errorCode: String? = nil) {
        state.withLock {
            if let actor { $0.actor = actor }
            if let target { $0.target = target }
            if let detail { $0.detail = detail }
            if let errorCode { $0.errorCode = errorCode }
        }
    }

    /// A refusal the handler answered itself (the console's redirect back with a message) instead of throwing.
    var errorCode: String? { state.withLock { $0.errorCode } }

    var actor: String? { state.withLock { $0.actor } }
    var target: String? { state.withLock { $0.target } }
    var detail: String? { state.withLock { $0.detail } }
}

/// The request context of every API route: Hummingbird's core storage, the caller and the audit note.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var principal: Principal?
    let audit = AuditNote()
    /// The client's address (what the audit log records as "from where").
    public let remoteAddress: String

    /// Set for the access check's internal probes: not written to the audit log (the check is one read).
    var isProbe = false

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    public var maxUploadSize: Int { 256 * 1024 }
}
