import GRDB
import LifeboatCore

// Machines: lookup, listing, removal, and the certificate checks the replication server makes on every
// connection.

extension Catalog {
    /// The machine of that name, active or removed; nil if it never enrolled.
    ///
    /// - Throws: `name.invalid` for a name that no machine can have.
    public func machine(named name: String) throws -> MachineRecord? {
        try Names.validate(name, kind: "machine")
        return try read { db in try Catalog.fetchMachine(db, name) }
    }

    /// All active machines (and the removed ones with `includeRemoved`), sorted by name.
    public func machines(includeRemoved: Bool = false) throws -> [MachineRecord] {
        try read { db in
            let filter = includeRemoved ? "" : "WHERE removed_at IS NULL"
            let rows = try Row.fetchAll(
                db,
                sql: "SELECT \(MachineRecord.columns) FROM machines \(filter) ORDER BY name"
            )
            var volumes: [String: [VolumeRecord]] = [:]
            for row in try Row.fetchAll(
                db,
                sql: "SELECT machine, name, size FROM machine_volumes ORDER BY machine, name"
            ) {
                volumes[row["machine"], default: []].append(VolumeRecord(name: row["name"], size: row["size"]))
            }
            return rows.map { row in MachineRecord(row: row, volumes: volumes[row["name"]] ?? []) }
        }
    }

    /// Marks the machine removed and disconnected, and revokes its certificate (the caller records the event).
    /// Its point history and settings stay (for re-enrollment and for the recovery points still staged).
    ///
    /// - Throws: `machine.unknown` when no active machine has this name.
    public func removeMachine(named name: String) throws {
        try Names.validate(name, kind: "machine")
        try write { db in
            let now = self.now
            let serial = try Catalog.requireActive(db, name)
            try db.execute(
                sql: "UPDATE machines SET removed_at = ?, connected = 0, throughput = NULL WHERE name = ?",
                arguments: [now.nanoseconds, name]
            )
            try db.execute(
                sql: "INSERT OR IGNORE INTO revoked_certificates (serial, machine, revoked_at) VALUES (?, ?, ?)",
                arguments: [serial, name, now.nanoseconds]
            )
        }
    }

    /// True when `serial` is the current certificate of the active machine named `machine` and is not revoked.
    public func isCertificateActive(serial: String, machine: String) throws -> Bool {
        try read { db in
            try Bool.fetchOne(
                db,
                sql: """
                    SELECT 1 FROM machines
                    WHERE name = ? AND certificate_serial = ? AND removed_at IS NULL
                        AND NOT EXISTS (SELECT 1 FROM revoked_certificates WHERE serial = ?)
                    """,
                arguments: [machine, serial, serial]
            ) != nil
        }
    }

    /// The serials of every revoked certificate (for the TLS layer's revocation check).
    public func revokedSerials() throws -> Set<String> {
        try read { db in try String.fetchSet(db, sql: "SELECT serial FROM revoked_certificates") }
    }

    // MARK: - Inside transactions

    static func fetchMachine(_ db: Database, _ name: String) throws -> MachineRecord? {
        guard
            let row = try Row.fetchOne(
                db,
                sql: "SELECT \(MachineRecord.columns) FROM machines WHERE name = ?",
                arguments: [name]
            )
        else { return nil }
        let volumes = try Row.fetchAll(
            db,
            sql: "SELECT name, size FROM machine_volumes WHERE machine = ? ORDER BY name",
            arguments: [name]
        ).map { VolumeRecord(name: $0["name"], size: $0["size"]) }
        return MachineRecord(row: row, volumes: volumes)
    }

    /// The certificate serial of the active machine `name`; `machine.unknown` if it is absent or removed.
    @discardableResult
    static func requireActive(_ db: Database, _ name: String) throws -> String {
        guard
            let row = try Row.fetchOne(
                db,
                sql: "SELECT certificate_serial, removed_at FROM machines WHERE name = ?",
                arguments: [name]
            )
        else {
            throw LifeboatError(
                "machine.unknown",
                "there is no machine named \(name): check the name (only enrolled machines are known)"
            )
        }
        if let removedAt = row["removed_at"] as Int64? {
            throw LifeboatError(
                "machine.unknown",
                "machine \(name) was removed at \(Timestamp(nanoseconds: removedAt)); enroll it again to protect it"
            )
        }
        return row["certificate_serial"]
    }
}
