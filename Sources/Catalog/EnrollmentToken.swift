public import LifeboatCore

/// A new enrollment token as handed to an operator once: the secret exists nowhere else.
public struct EnrollmentToken: Sendable, Equatable {
    /// A short hexadecimal id, to list and audit the token without revealing it.
    public var id: String
    /// 32 random bytes as 64 lowercase hexadecimal characters; the catalog keeps only its SHA-256.
    public var secret: String
    /// When the token stops being accepted.
    public var expiresAt: Timestamp

    public init(id: String, secret: String, expiresAt: Timestamp) {
        self.id = id
        self.secret = secret
        self.expiresAt = expiresAt
    }
}

/// What the catalog knows of an enrollment token (never its secret or the secret's hash).
public struct EnrollmentTokenRecord: Sendable, Equatable {
    public var id: String
    public var createdAt: Timestamp
    public var expiresAt: Timestamp
    /// When the token was redeemed, nil while unused.
    public var usedAt: Timestamp?
    /// The machine that redeemed the token.
    public var usedBy: String?
    /// The operator's note given at creation.
    public var note: String?

    public init(
        id: String,
        createdAt: Timestamp,
        expiresAt: Timestamp,
        usedAt: Timestamp? = nil,
        usedBy: String? = nil,
        note: String? = nil
    ) {
        self.id = id
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usedAt = usedAt
        self.usedBy = usedBy
        self.note = note
    }

    /// Whether the token has expired at `now` (a token is valid strictly before `expiresAt`).
    public func isExpired(now: Timestamp) -> Bool { now >= expiresAt }

    /// Whether the token can still be redeemed at `now`: unused and not expired.
    public func isRedeemable(now: Timestamp) -> Bool { usedAt == nil && !isExpired(now: now) }
}
