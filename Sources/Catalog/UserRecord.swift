import GRDB
public import LifeboatCore

/// A person (or a program acting for one) who may sign in to the control plane, without the password hash.
public struct UserRecord: Sendable, Hashable {
    public var name: String
    /// The DR roles the user holds (never empty).
    public var roles: Set<Role>
    public var createdAt: Timestamp
    public var passwordChangedAt: Timestamp
    /// When the user was disabled; nil while the user may sign in.
    public var disabledAt: Timestamp?

    public init(
        name: String,
        roles: Set<Role>,
        createdAt: Timestamp,
        passwordChangedAt: Timestamp,
        disabledAt: Timestamp? = nil
    ) {
        self.name = name
        self.roles = roles
        self.createdAt = createdAt
        self.passwordChangedAt = passwordChangedAt
        self.disabledAt = disabledAt
    }

    /// Whether the user may sign in and use tokens.
    public var isActive: Bool { disabledAt == nil }
}

/// Roles as stored: comma-separated in `Role` order (`analyst,operator`).
enum RoleCoding {
    static func encode(_ roles: Set<Role>) -> String {
        roles.sorted().map(\.rawValue).joined(separator: ",")
    }

    /// The roles named in `text`; words this build does not know are left out.
    static func decode(_ text: String) -> Set<Role> {
        Set(text.split(separator: ",").compactMap { Role(rawValue: String($0)) })
    }
}

extension UserRecord {
    static let columns = "name, roles, created_at, password_changed_at, disabled_at"

    init(row: Row) {
        self.init(
            name: row["name"],
            roles: RoleCoding.decode(row["roles"]),
            createdAt: Timestamp(nanoseconds: row["created_at"]),
            passwordChangedAt: Timestamp(nanoseconds: row["password_changed_at"]),
            disabledAt: (row["disabled_at"] as Int64?).map(Timestamp.init(nanoseconds:))
        )
    }
}
