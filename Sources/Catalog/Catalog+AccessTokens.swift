import GRDB
public import LifeboatCore

// Access tokens and browser sessions. A secret is `lbk1_` + 43 URL-safe Base64 characters (32 random bytes);
// only its SHA-256 is stored, and a presented secret is found by its hash, so neither the catalog's contents
// nor the lookup's timing give away a usable secret.

extension Catalog {
    /// The longest an access token may be valid: 366 days.
    public static let maximumTokenValiditySeconds: Int64 = 366 * 86_400

    /// How often `authenticate` records a token's use, at most (seconds).
    static let lastUsedResolutionSeconds: Int64 = 60

    private static let secretPrefix = "lbk1_"

    /// Creates a token for an active user, valid for `seconds` from now. Sessions also get a CSRF secret.
    ///
    /// - Throws: `access.invalid-validity` (not positive, or over 366 days), `user.unknown`, `user.disabled`.
    public func createAccessToken(
        user: String,
        name: String,
        kind: AccessTokenKind,
        validFor seconds: Int64
    ) throws
        -> IssuedAccessToken
    {
        guard seconds > 0, seconds <= Catalog.maximumTokenValiditySeconds else {
            throw LifeboatError(
                "access.invalid-validity",
                "a token must be valid for 1 s to 366 days (\(Catalog.maximumTokenValiditySeconds) s), got \(seconds) s: "
                    + "choose a validity in that range and make a new token when it expires"
            )
        }
        try Names.validate(user, kind: "user")
        let secret = Catalog.secretPrefix + Secrets.base64URL(Secrets.randomBytes(32))
        let csrf = kind == .session ? Secrets.base64URL(Secrets.randomBytes(32)) : nil
        return try write { db in
            let owner = try Catalog.requireUser(db, user)
            guard owner.isActive else {
                throw LifeboatError(
                    "user.disabled",
                    "user \(user) is disabled and cannot get tokens: enable the user first if they should have access again"
                )
            }
            let now = self.now
            var id: String
            repeat {
                id = LaunchIdentifiers.make("tok")
            } while try Bool.fetchOne(db, sql: "SELECT 1 FROM access_tokens WHERE id = ?", arguments: [id]) != nil
            let expiresAt = Timestamp(nanoseconds: now.nanoseconds + seconds * 1_000_000_000)
            try db.execute(
                sql: """
                    INSERT INTO access_tokens (id, user, name, kind, secret_hash, csrf, created_at, expires_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    id, user, name, kind.rawValue, Secrets.sha256Hex(secret), csrf, now.nanoseconds,
                    expiresAt.nanoseconds,
                ]
            )
            let record = AccessTokenRecord(
                id: id,
                user: user,
                name: name,
                kind: kind,
                createdAt: now,
                expiresAt: expiresAt
            )
            return IssuedAccessToken(record: record, secret: secret, csrf: csrf)
        }
    }

    /// The token, its user and (for a session) its CSRF secret, when `secret` is a valid token's: well formed,
    /// known, not expired, not revoked, and of an active user. Nil otherwise. Records the use in
    /// `lastUsedAt` at most once a minute per token, so that most requests only read.
    public func authenticate(secret: String) throws -> (token: AccessTokenRecord, user: UserRecord, csrf: String?)? {
        guard Catalog.isWellFormedSecret(secret) else { return nil }
        let hash = Secrets.sha256Hex(secret)
        let now = self.now
        let found: (token: AccessTokenRecord, user: UserRecord, csrf: String?)? = try read { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: "SELECT \(AccessTokenRecord.columns), csrf FROM access_tokens WHERE secret_hash = ?",
                    arguments: [hash]
                )
            else { return nil }
            let token = AccessTokenRecord(row: row)
            guard let user = try Catalog.fetchUser(db, token.user) else { return nil }
            return (token, user, row["csrf"])
        }
        guard var found, found.token.isValid(now: now), found.user.isActive else { return nil }
        let resolution = Catalog.lastUsedResolutionSeconds * 1_000_000_000
        if found.token.lastUsedAt.map({ now.nanoseconds - $0.nanoseconds >= resolution }) ?? true {
            try write { db in
                try db.execute(
                    sql: """
                        UPDATE access_tokens SET last_used_at = ?
                        WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)
                        """,
                    arguments: [now.nanoseconds, found.token.id, now.nanoseconds - resolution]
                )
            }
            found.token.lastUsedAt = now
        }
        return found
    }

    /// The tokens of one user (nil: of everyone), newest first.
    public func accessTokens(user: String?) throws -> [AccessTokenRecord] {
        try read { db in
            if let user {
                return try Row.fetchAll(
                    db,
                    sql:
                        "SELECT \(AccessTokenRecord.columns) FROM access_tokens WHERE user = ? ORDER BY created_at DESC, id DESC",
                    arguments: [user]
                ).map(AccessTokenRecord.init(row:))
            }
            return try Row.fetchAll(
                db,
                sql: "SELECT \(AccessTokenRecord.columns) FROM access_tokens ORDER BY created_at DESC, id DESC"
            ).map(AccessTokenRecord.init(row:))
        }
    }

    /// The token with this id, nil if there is none.
    public func accessToken(id: String) throws -> AccessTokenRecord? {
        try read { db in try Catalog.fetchAccessToken(db, id) }
    }

    /// Revokes a token at once. Revoking a revoked token keeps the first date.
    ///
    /// - Throws: `access.unknown`.
    @discardableResult
    public func revokeAccessToken(id: String) throws -> AccessTokenRecord {
        try write { db in
            guard try Catalog.fetchAccessToken(db, id) != nil else {
                throw LifeboatError(
                    "access.unknown",
                    "there is no access token \(id): check the id in the list of tokens (a deleted user's tokens are gone)"
                )
            }
            try db.execute(
                sql: "UPDATE access_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                arguments: [self.now.nanoseconds, id]
            )
            return try Catalog.fetchAccessToken(db, id)!
        }
    }

    /// Deletes the SESSION tokens that expired, or were revoked, before `olderThan`; returns how many. API
    /// tokens stay (their history is worth keeping; revoke them instead).
    @discardableResult
    public func deleteExpiredSessions(olderThan: Timestamp) throws -> Int {
        try write { db in
            try db.execute(
                sql: "DELETE FROM access_tokens WHERE kind = ? AND (expires_at < ? OR revoked_at < ?)",
                arguments: [AccessTokenKind.session.rawValue, olderThan.nanoseconds, olderThan.nanoseconds]
            )
            return db.changesCount
        }
    }

    // MARK: - Inside transactions

    static func fetchAccessToken(_ db: Database, _ id: String) throws -> AccessTokenRecord? {
        try Row.fetchOne(
            db,
            sql: "SELECT \(AccessTokenRecord.columns) FROM access_tokens WHERE id = ?",
            arguments: [id]
        )
        .map(AccessTokenRecord.init(row:))
    }

    /// `lbk1_` followed by exactly 43 URL-safe Base64 characters.
    static func isWellFormedSecret(_ secret: String) -> Bool {
        guard secret.utf8.count == secretPrefix.utf8.count + 43, secret.hasPrefix(secretPrefix) else { return false }
        return Secrets.isBase64URL(secret.dropFirst(secretPrefix.count))
    }
}
