
/// The REST API's version prefix and shared shapes.
public enum API {
    /// Every route lives under this path.
    public static let prefix = "/api/v1"
    /// The session cookie set by `POST /api/v1/login` for browsers.
    public static let sessionCookie = "lifeboat_session"
    /// The header that carries a session's CSRF token on state-changing requests made with the cookie.
    public static let csrfHeader = "X-CSRF-Token"
    /// The largest request body accepted, in bytes.
    public static let maxBodyBytes = 256 * 1024
    /// The default and largest page sizes of lists.
    public static let defaultPageSize = 50
    public static let maxPageSize = 500
}

/// Every error answer: `{"error": {"code": "...", "message": "...", "status": 403}}`.
public struct APIErrorBody: Codable, Sendable, Equatable {
    public struct Detail: Codable, Sendable, Equatable {
        /// Stable and machine-readable (`auth.required`, `launch.incident-required`, `request.invalid-json` …).
        public var code: String
        /// What went wrong and what to do about it, for a person.
        public var message: String
        public var status: Int

        public init(code: String, message: String, status: Int) {
            self.code = code
            self.message = message
            self.status = status
        }
    }

    public var error: Detail

    public init(code: String, message: String, status: Int) {
        error = Detail(code: code, message: message, status: status)
    }
}

/// One page of a list: `items` from `offset`, at most `limit` of them, out of `total`.
public struct Page<Item: Codable & Sendable>: Codable, Sendable {
    public var items: [Item]
    public var total: Int
    public var offset: Int
    public var limit: Int

    public init(items: [Item], total: Int, offset: Int, limit: Int) {
        self.items = items
        self.total = total
        self.offset = offset
        self.limit = limit
    }
}

/// The answer of a request made with `"dryRun": true`: authorized and valid, nothing changed.
public struct DryRunResult: Codable, Sendable, Equatable {
    public var dryRun: Bool
    /// What the request would have done.
    public var wouldDo: String

    public init(wouldDo: String) {
        self.dryRun = true
        self.wouldDo = wouldDo
    }
}

/// `GET /api/v1/health`: no login needed.
public struct Health: Codable, Sendable {
    public var status: String
    public var version: String

    public init(status: String, version: String) {
        self.status = status
        self.version = version
    }
}
