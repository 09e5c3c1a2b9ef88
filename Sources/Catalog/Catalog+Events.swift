import GRDB
import LifeboatCore

// The machine event log: what happened to each machine, for the console and for alerts. Events outlive
// their machine (a removed machine's history stays readable).

extension Catalog {
    /// Appends an event for `machine` stamped with the injected clock. The machine need not be enrolled.
    ///
    /// - Throws: `name.invalid`, `machine.bad-event` for an empty kind.
    public func recordEvent(machine: String, kind: String, detail: String) throws {
        try Names.validate(machine, kind: "machine")
        guard !kind.isEmpty else {
            throw LifeboatError("machine.bad-event", "an event of machine \(machine) needs a kind")
        }
        try write { db in
            try Catalog.insertEvent(db, time: self.now, machine: machine, kind: kind, detail: detail)
        }
    }

    /// The newest `limit` events, of one machine or (nil) of all, newest first.
    public func events(machine: String?, limit: Int) throws -> [MachineEvent] {
        if let machine { try Names.validate(machine, kind: "machine") }
        return try read { db in
            let rows: [Row]
            if let machine {
                rows = try Row.fetchAll(
                    db,
                    sql:
                        "SELECT id, time, machine, kind, detail FROM machine_events WHERE machine = ? ORDER BY id DESC LIMIT ?",
                    arguments: [machine, max(0, limit)]
                )
            } else {
                rows = try Row.fetchAll(
                    db,
                    sql: "SELECT id, time, machine, kind, detail FROM machine_events ORDER BY id DESC LIMIT ?",
                    arguments: [max(0, limit)]
                )
            }
            return rows.map { row in
                MachineEvent(
                    id: row["id"],
                    time: Timestamp(nanoseconds: row["time"]),
                    machine: row["machine"],
                    kind: row["kind"],
                    detail: row["detail"]
                )
            }
        }
    }

    /// Inserts an event inside the caller's transaction.
    static func insertEvent(_ db: Database, time: Timestamp, machine: String, kind: String, detail: String) throws {
        try db.execute(
            sql: "INSERT INTO machine_events (time, machine, kind, detail) VALUES (?, ?, ?, ?)",
            arguments: [time.nanoseconds, machine, kind, detail]
        )
    }
}
