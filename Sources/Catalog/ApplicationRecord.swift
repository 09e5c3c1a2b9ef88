import GRDB
public import LifeboatCore

/// A group of machines recovered together (a shop: its web servers and database), with its recovery
/// objectives: how much data it may lose (RPO) and how long it may be down (RTO).
public struct ApplicationRecord: Sendable, Hashable {
    public var name: String
    public var description: String
    /// The recovery point objective in seconds: the most recent data the application may lose.
    public var rpoSeconds: Int64?
    /// The recovery time objective in seconds: how long a recovery may take, from launch to checks passed.
    public var rtoSeconds: Int64?
    /// The launch settings the application suggests for its machines (a machine's own settings still apply).
    public var launchSettings: LaunchSettings?
    public var createdAt: Timestamp
    /// The active machines that belong to it, sorted by name.
    public var machines: [String]

    public init(
        name: String,
        description: String = "",
        rpoSeconds: Int64? = nil,
        rtoSeconds: Int64? = nil,
        launchSettings: LaunchSettings? = nil,
        createdAt: Timestamp,
        machines: [String] = []
    ) {
        self.name = name
        self.description = description
        self.rpoSeconds = rpoSeconds
        self.rtoSeconds = rtoSeconds
        self.launchSettings = launchSettings
        self.createdAt = createdAt
        self.machines = machines
    }

    /// Hashes every field but the launch settings (which are only Equatable); equal records hash equally.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(description)
        hasher.combine(rpoSeconds)
        hasher.combine(rtoSeconds)
        hasher.combine(createdAt)
        hasher.combine(machines)
    }
}

/// How an update treats one optional field: leave it as it is, set it, or clear it (store none).
///
/// `updateApplication(name: "shop", rpoSeconds: .set(300), rtoSeconds: .clear)` sets the RPO objective,
/// removes the RTO objective and leaves everything else unchanged (every parameter defaults to `.keep`).
public enum FieldChange<Value: Sendable>: Sendable {
    case keep
    case set(Value)
    case clear

    /// The value after the change, given the value before it.
    public func applied(to current: Value?) -> Value? {
        switch self {
        case .keep: current
        case .set(let value): value
        case .clear: nil
        }
    }
}

extension FieldChange: Equatable where Value: Equatable {}
extension FieldChange: Hashable where Value: Hashable {}

extension ApplicationRecord {
    static let columns = "name, description, rpo_seconds, rto_seconds, launch_settings, created_at"

    /// A record from an `applications` row; settings this build cannot read come back as nil.
    init(row: Row, machines: [String]) {
        self.init(
            name: row["name"],
            description: row["description"],
            rpoSeconds: row["rpo_seconds"],
            rtoSeconds: row["rto_seconds"],
            launchSettings: (row["launch_settings"] as String?).flatMap { try? LaunchSettingsCoding.decode($0) },
            createdAt: Timestamp(nanoseconds: row["created_at"]),
            machines: machines
        )
    }
}
