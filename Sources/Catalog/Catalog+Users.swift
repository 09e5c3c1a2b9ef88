import GRDB
public import LifeboatCore

// Users of the control plane: names, scrypt password hashes and DR roles. The catalog never lets the last
// active admin go (by a role change, disabling or deleting), so that someone can always administer it.

extension Catalog {
    /// The shortest password accepted, in characters.
    public static let minimumPasswordLength = 12

    /// Creates an active user.
    ///
    /// - Throws: `name.invalid`, `user.no-roles`, `user.weak-password` (under 12 characters or the user's
    ///   name), `user.exists`.
    @discardableResult
    public func createUser(name: String, password: String, roles: Set<Role>) throws -> UserRecord {
        try Names.validate(name, kind: "user")
        try Catalog.checkRoles(roles, user: name)
        try Catalog.checkPassword(password, user: name)
        // Fail fast before the deliberately slow hash; the insert below checks again.
        if try user(named: name) != nil { throw Catalog.userExists(name) }
        let hash = try PasswordHash.make(password: password)
        return try write { db in
            if try Catalog.fetchUser(db, name) != nil { throw Catalog.userExists(name) }
            let now = self.now.nanoseconds
            try db.execute(
                sql: """
                    INSERT INTO users (name, password_hash, roles, created_at, password_changed_at)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [name, hash, RoleCoding.encode(roles), now, now]
            )
            return try Catalog.requireUser(db, name)
        }
    }

    /// Every user, sorted by name.
    public func users() throws -> [UserRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT \(UserRecord.columns) FROM users ORDER BY name").map(
                UserRecord.init(row:)
            )
        }
    }

    /// The user of that name, nil if there is none.
    ///
    /// - Throws: `name.invalid` for a name no user can have.
    public func user(named name: String) throws -> UserRecord? {
        try Names.validate(name, kind: "user")
        return try read { db in try Catalog.fetchUser(db, name) }
    }

    /// Replaces a user's roles.
    ///
    /// - Throws: `user.unknown`, `user.no-roles`, `user.last-admin` when this would leave no active admin.
    @discardableResult
    public func setRoles(user name: String, roles: Set<Role>) throws -> UserRecord {
        try Names.validate(name, kind: "user")
        try Catalog.checkRoles(roles, user: name)
        return try write { db in
            let adminsBefore = try Catalog.activeAdminCount(db)
            _ = try Catalog.requireUser(db, name)
            try db.execute(
                sql: "UPDATE users SET roles = ? WHERE name = ?",
                arguments: [RoleCoding.encode(roles), name]
            )
            try Catalog.keepAnAdmin(db, before: adminsBefore, user: name, change: "take the admin role from \(name)")
            return try Catalog.requireUser(db, name)
        }
    }

    /// Sets a new password and signs the user out everywhere (every SESSION token is revoked; API tokens stay).
    ///
    /// - Throws: `user.unknown`, `user.weak-password`.
    public func setPassword(user name: String, password: String) throws {
        try Names.validate(name, kind: "user")
        try Catalog.checkPassword(password, user: name)
        if try user(named: name) == nil { throw Catalog.unknownUser(name) }
        let hash = try PasswordHash.make(password: password)
        try write { db in
            _ = try Catalog.requireUser(db, name)
            let now = self.now.nanoseconds
            try db.execute(
                sql: "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE name = ?",
                arguments: [hash, now, name]
            )
            try db.execute(
                sql: "UPDATE access_tokens SET revoked_at = ? WHERE user = ? AND kind = ? AND revoked_at IS NULL",
                arguments: [now, name, AccessTokenKind.session.rawValue]
            )
        }
    }

    /// Disables a user (every token and session of theirs is revoked at once) or enables them again (revoked
    /// tokens stay revoked). Disabling a disabled user keeps the first date.
    ///
    /// - Throws: `user.unknown`, `user.last-admin` when this would leave no active admin.
    @discardableResult
    public func setUserDisabled(_ name: String, disabled: Bool) throws -> UserRecord {
        try Names.validate(name, kind: "user")
        return try write { db in
            let adminsBefore = try Catalog.activeAdminCount(db)
            _ = try Catalog.requireUser(db, name)
            let now = self.now.nanoseconds
            if disabled {
                try db.execute(
                    sql: "UPDATE users SET disabled_at = COALESCE(disabled_at, ?) WHERE name = ?",
                    arguments: [now, name]
                )
                try db.execute(
                    sql: "UPDATE access_tokens SET revoked_at = ? WHERE user = ? AND revoked_at IS NULL",
                    arguments: [now, name]
                )
                try Catalog.keepAnAdmin(db, before: adminsBefore, user: name, change: "disable \(name)")
            } else {
                try db.execute(sql: "UPDATE users SET disabled_at = NULL WHERE name = ?", arguments: [name])
            }
            return try Catalog.requireUser(db, name)
        }
    }

    /// Deletes a user and their tokens. What they did stays in the audit log and on incidents, under their name.
    ///
    /// - Throws: `user.unknown`, `user.last-admin` when this would leave no active admin.
    public func deleteUser(_ name: String) throws {
        try Names.validate(name, kind: "user")
        try write { db in
            let adminsBefore = try Catalog.activeAdminCount(db)
            _ = try Catalog.requireUser(db, name)
            try db.execute(sql: "DELETE FROM access_tokens WHERE user = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM users WHERE name = ?", arguments: [name])
            try Catalog.keepAnAdmin(db, before: adminsBefore, user: name, change: "delete \(name)")
        }
    }

    /// The user when `password` is theirs and they are active; nil otherwise (unknown or misspelt name, wrong
    /// password, disabled user). An unknown name is checked against `PasswordHash.dummy`, so every answer
    /// costs one scrypt and the time taken does not tell whether the name exists.
    public func verifyPassword(user name: String, password: String) throws -> UserRecord? {
        let found: (record: UserRecord, hash: String)?
        if (try? Names.validate(name, kind: "user")) == nil {
            found = nil
        } else {
            found = try read { db in
                guard
                    let row = try Row.fetchOne(
                        db,
                        sql: "SELECT \(UserRecord.columns), password_hash FROM users WHERE name = ?",
                        arguments: [name]
                    )
                else { return nil }
                return (UserRecord(row: row), row["password_hash"])
            }
        }
        guard let found else {
            _ = PasswordHash.verify(password: password, stored: PasswordHash.dummy)
            return nil
        }
        let matches = PasswordHash.verify(password: password, stored: found.hash)
        return matches && found.record.isActive ? found.record : nil
    }

    /// How many active users hold the admin role.
    public func activeAdminCount() throws -> Int {
        try read { db in try Catalog.activeAdminCount(db) }
    }

    // MARK: - Inside transactions

    static func fetchUser(_ db: Database, _ name: String) throws -> UserRecord? {
        try Row.fetchOne(db, sql: "SELECT \(UserRecord.columns) FROM users WHERE name = ?", arguments: [name])
            .map(UserRecord.init(row:))
    }

    /// The user, or `user.unknown`.
    static func requireUser(_ db: Database, _ name: String) throws -> UserRecord {
        guard let user = try fetchUser(db, name) else { throw unknownUser(name) }
        return user
    }

    static func activeAdminCount(_ db: Database) throws -> Int {
        try String.fetchAll(db, sql: "SELECT roles FROM users WHERE disabled_at IS NULL")
            .filter { RoleCoding.decode($0).contains(.admin) }
            .count
    }

    /// Throws `user.last-admin` (rolling the caller's transaction back) when there were active admins before
    /// the change and there are none after it.
    private static func keepAnAdmin(_ db: Database, before: Int, user: String, change: String) throws {
        guard before > 0, try activeAdminCount(db) == 0 else { return }
        throw LifeboatError(
            "user.last-admin",
            "\(user) is the last active admin, and nobody could administer Lifeboat without one: "
                + "give the admin role to another active user first, then \(change)"
        )
    }

    static func unknownUser(_ name: String) -> LifeboatError {
        LifeboatError("user.unknown", "there is no user named \(name): check the name in the list of users")
    }

    private static func userExists(_ name: String) -> LifeboatError {
        LifeboatError(
            "user.exists",
            "a user named \(name) exists already: choose another name, or change that user's roles"
        )
    }

    private static func checkRoles(_ roles: Set<Role>, user: String) throws {
        guard roles.isEmpty else { return }
        throw LifeboatError(
            "user.no-roles",
            "user \(user) needs at least one role: give one or more of \(Role.allCases.map(\.rawValue).joined(separator: ", "))"
        )
    }

    private static func checkPassword(_ password: String, user: String) throws {
        if password.count < minimumPasswordLength {
            throw LifeboatError(
                "user.weak-password",
                "the password of \(user) has \(password.count) characters: choose one of at least \(minimumPasswordLength) (a few words make a good one)"
            )
        }
        if password.lowercased() == user.lowercased() {
            throw LifeboatError("user.weak-password", "the password of \(user) is the user's name: choose another one")
        }
    }
}
