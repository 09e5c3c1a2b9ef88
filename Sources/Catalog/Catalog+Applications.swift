import GRDB
public import LifeboatCore

// Applications: groups of machines with a description, recovery objectives and suggested launch settings.
// A machine names its application (`setApplication`); naming one that does not exist yet creates it.

extension Catalog {
    /// Creates an application with no machines.
    ///
    /// - Throws: `name.invalid`, `application.invalid-objective` (an objective that is not positive),
    ///   `application.exists`.
    @discardableResult
    public func createApplication(
        name: String,
        description: String = "",
        rpoSeconds: Int64? = nil,
        rtoSeconds: Int64? = nil
    ) throws -> ApplicationRecord {
        try Names.validate(name, kind: "application")
        try Catalog.checkObjective(rpoSeconds, "RPO", application: name)
        try Catalog.checkObjective(rtoSeconds, "RTO", application: name)
        return try write { db in
            if try Catalog.applicationExists(db, name) {
                throw LifeboatError(
                    "application.exists",
                    "application \(name) exists already: change it with an update, or choose another name"
                )
            }
            try db.execute(
                sql: """
                    INSERT INTO applications (name, description, rpo_seconds, rto_seconds, created_at)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [name, description, rpoSeconds, rtoSeconds, self.now.nanoseconds]
            )
            return try Catalog.requireApplication(db, name)
        }
    }

    /// Changes an application: a nil `description` keeps it; each `FieldChange` keeps (`.keep`, the default),
    /// sets (`.set(value)`) or removes (`.clear`) its field. Launch settings are validated first.
    ///
    /// - Throws: `application.unknown`, `application.invalid-objective`, `launch.bad-settings`.
    @discardableResult
    public func updateApplication(
        name: String,
        description: String? = nil,
        rpoSeconds: FieldChange<Int64> = .keep,
        rtoSeconds: FieldChange<Int64> = .keep,
        launchSettings: FieldChange<LaunchSettings> = .keep
    ) throws -> ApplicationRecord {
        try Names.validate(name, kind: "application")
        if case .set(let value) = rpoSeconds { try Catalog.checkObjective(value, "RPO", application: name) }
        if case .set(let value) = rtoSeconds { try Catalog.checkObjective(value, "RTO", application: name) }
        var settingsJSON: String?
        if case .set(let settings) = launchSettings {
            try settings.validate()
            settingsJSON = try LaunchSettingsCoding.encode(settings)
        }
        return try write { db in
            let current = try Catalog.requireApplication(db, name)
            let storedSettings: String?
            switch launchSettings {
            case .keep:
                storedSettings = try String.fetchOne(
                    db,
                    sql: "SELECT launch_settings FROM applications WHERE name = ?",
                    arguments: [name]
                )
            case .set: storedSettings = settingsJSON
            case .clear: storedSettings = nil
            }
            try db.execute(
                sql: """
                    UPDATE applications SET description = ?, rpo_seconds = ?, rto_seconds = ?, launch_settings = ?
                    WHERE name = ?
                    """,
                arguments: [
                    description ?? current.description, rpoSeconds.applied(to: current.rpoSeconds),
                    rtoSeconds.applied(to: current.rtoSeconds), storedSettings, name,
                ]
            )
            return try Catalog.requireApplication(db, name)
        }
    }

    /// Every application, sorted by name, with its active machines.
    public func applications() throws -> [ApplicationRecord] {
        try read { db in try Catalog.fetchApplications(db) }
    }

    /// The application of that name, nil if there is none.
    ///
    /// - Throws: `name.invalid` for a name no application can have.
    public func application(named name: String) throws -> ApplicationRecord? {
        try Names.validate(name, kind: "application")
        return try read { db in try Catalog.fetchApplication(db, name) }
    }

    /// Deletes an application that no active machine belongs to (removed machines that named it name none
    /// afterwards). Incidents keep naming it, as history.
    ///
    /// - Throws: `application.unknown`, `application.in-use` naming its machines.
    public func deleteApplication(_ name: String) throws {
        try Names.validate(name, kind: "application")
        try write { db in
            let application = try Catalog.requireApplication(db, name)
            guard application.machines.isEmpty else {
                throw LifeboatError(
                    "application.in-use",
                    "application \(name) still has machines \(application.machines.joined(separator: ", ")): "
                        + "move each to another application or to none first, then delete it"
                )
            }
            try db.execute(sql: "UPDATE machines SET application = NULL WHERE application = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM applications WHERE name = ?", arguments: [name])
        }
    }

    // MARK: - Inside transactions

    static func applicationExists(_ db: Database, _ name: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT 1 FROM applications WHERE name = ?", arguments: [name]) != nil
    }

    /// The names of the active machines of `application`, sorted.
    static func applicationMachines(_ db: Database, _ application: String) throws -> [String] {
        try String.fetchAll(
            db,
            sql: "SELECT name FROM machines WHERE application = ? AND removed_at IS NULL ORDER BY name",
            arguments: [application]
        )
    }

    static func fetchApplication(_ db: Database, _ name: String) throws -> ApplicationRecord? {
        guard
            let row = try Row.fetchOne(
                db,
                sql: "SELECT \(ApplicationRecord.columns) FROM applications WHERE name = ?",
                arguments: [name]
            )
        else { return nil }
        return ApplicationRecord(row: row, machines: try applicationMachines(db, name))
    }

    static func fetchApplications(_ db: Database) throws -> [ApplicationRecord] {
        var members: [String: [String]] = [:]
        for row in try Row.fetchAll(
            db,
            sql:
                "SELECT name, application FROM machines WHERE application IS NOT NULL AND removed_at IS NULL ORDER BY name"
        ) {
            members[row["application"], default: []].append(row["name"])
        }
        return try Row.fetchAll(db, sql: "SELECT \(ApplicationRecord.columns) FROM applications ORDER BY name")
            .map { row in ApplicationRecord(row: row, machines: members[row["name"]] ?? []) }
    }

    /// The application, or `application.unknown`.
    static func requireApplication(_ db: Database, _ name: String) throws -> ApplicationRecord {
        guard let application = try fetchApplication(db, name) else { throw unknownApplication(name) }
        return application
    }

    static func unknownApplication(_ name: String) -> LifeboatError {
        LifeboatError(
            "application.unknown",
            "there is no application named \(name): create it first, or check the name in the list of applications"
        )
    }

    private static func checkObjective(_ seconds: Int64?, _ kind: String, application: String) throws {
        guard let seconds, seconds <= 0 else { return }
        throw LifeboatError(
            "application.invalid-objective",
            "the \(kind) objective of application \(application) must be a positive number of seconds, got \(seconds)"
        )
    }
}
