import GRDB
public import LifeboatCore

/// API tokens serve programs (long-lived, made by a person for a script); SESSION tokens serve a signed-in
/// browser (short-lived, with a CSRF secret, revoked when the password changes).
public enum AccessTokenKind: String, Sendable, Hashable, Codable, CaseIterable {
    case api = "API"
    case session = "SESSION"
}

/// What the catalog knows of an access token: never its secret, nor the secret's hash.
public struct AccessTokenRecord: Sendable, Hashable {
    /// `tok-<16 hex>`: names the token in lists and the audit log without revealing it.
    public var id: String
    /// The user the token acts for.
    public var user: String
    /// What the token is for, as its creator put it.
    public var name: String
    public var kind: AccessTokenKind
    public var createdAt: Timestamp
    /// The token is accepted strictly before this instant.
    public var expiresAt: Timestamp
    public var revokedAt: Timestamp?
    /// When the token was last presented (recorded at most once a minute).
    public var lastUsedAt: Timestamp?

    public init(
        id: String,
        user: String,
        name: String,
        kind: AccessTokenKind,
        createdAt: Timestamp,
        expiresAt: Timestamp,
        revokedAt: Timestamp? = nil,
        lastUsedAt: Timestamp? = nil
    ) {
        self.id = id
        self.user = user
        self.name = name
        self.kind = kind
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.lastUsedAt = lastUsedAt
    }

    /// Whether the token is accepted at `now`: not revoked and not expired (its user's state aside).
    public func isValid(now: Timestamp) -> Bool { revokedAt == nil && now < expiresAt }
}

/// A new access token as handed over once: the secret (and a session's CSRF secret) exist nowhere else in
/// this form; the catalog keeps only the SHA-256 of the secret.
public struct IssuedAccessToken: Sendable, Hashable {
    public var record: AccessTokenRecord
    /// `lbk1_` and 43 URL-safe Base64 characters (32 random bytes).
    public var secret: String
    /// For sessions: the value the browser echoes in a header on every state-changing request.
    public var csrf: String?

    public init(record: AccessTokenRecord, secret: String, csrf: String?) {
        self.record = record
        self.secret = secret
        self.csrf = csrf
    }
}

extension AccessTokenRecord {
    static let columns = "id, user, name, kind, created_at, expires_at, revoked_at, last_used_at"

    init(row: Row) {
        func time(_ column: String) -> Timestamp? { (row[column] as Int64?).map(Timestamp.init(nanoseconds:)) }
        self.init(
            id: row["id"],
            user: row["user"],
            name: row["name"],
            kind: AccessTokenKind(rawValue: row["kind"]) ?? .api,
            createdAt: Timestamp(nanoseconds: row["created_at"]),
            expiresAt: Timestamp(nanoseconds: row["expires_at"]),
            revokedAt: time("revoked_at"),
            lastUsedAt: time("last_used_at")
        )
    }
}
