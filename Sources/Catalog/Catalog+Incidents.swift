import Foundation
import GRDB
import LifeboatCore

// Incidents: a decider declares one for the applications an event touches, launches are made under it
// (`linkJob`), analysts add notes and reports, and a decider closes it with a summary. Recovery launches
// need an open incident unless an admin turned that rule off (`ControlSettings.requireIncidentForRecovery`).

extension Catalog {
    /// Declares an OPEN incident.
    ///
    /// - Throws: `incident.invalid` (an empty title or declarer), `application.unknown`.
    @discardableResult
    public func declareIncident(
        title: String,
        severity: IncidentSeverity,
        applications: [String],
        by declarer: String
    ) throws -> IncidentRecord {
        let title = title.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !title.isEmpty else {
            throw LifeboatError("incident.invalid", "an incident needs a title that says what happened")
        }
        guard !declarer.isEmpty else {
            throw LifeboatError("incident.invalid", "an incident needs the name of who declares it")
        }
        var seen = Set<String>()
        let applications = applications.filter { seen.insert($0).inserted }
        let json = String(decoding: try JSONEncoder().encode(applications), as: UTF8.self)
        return try write { db in
            for application in applications where try !Catalog.applicationExists(db, application) {
                throw Catalog.unknownApplication(application)
            }
            var id: String
            repeat {
                id = LaunchIdentifiers.make("inc")
            } while try Bool.fetchOne(db, sql: "SELECT 1 FROM incidents WHERE id = ?", arguments: [id]) != nil
            try db.execute(
                sql: """
                    INSERT INTO incidents (id, title, severity, applications, status, declared_by, declared_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    id, title, severity.rawValue, json, IncidentStatus.open.rawValue, declarer, self.now.nanoseconds,
                ]
            )
            return try Catalog.requireIncident(db, id)
        }
    }

    /// Closes an open incident with a summary of what happened and what was done.
    ///
    /// - Throws: `incident.invalid` (an empty summary), `incident.unknown`, `incident.closed`.
    @discardableResult
    public func closeIncident(id: String, summary: String, by closer: String) throws -> IncidentRecord {
        let summary = summary.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !summary.isEmpty else {
            throw LifeboatError(
                "incident.invalid",
                "closing incident \(id) needs a summary: say what happened and what was done"
            )
        }
        return try write { db in
            let incident = try Catalog.requireIncident(db, id)
            guard incident.isOpen else { throw Catalog.closedIncident(incident) }
            try db.execute(
                sql: "UPDATE incidents SET status = ?, closed_by = ?, closed_at = ?, summary = ? WHERE id = ?",
                arguments: [IncidentStatus.closed.rawValue, closer, self.now.nanoseconds, summary, id]
            )
            return try Catalog.requireIncident(db, id)
        }
    }

    /// The incidents with that status (nil: all), newest first.
    public func incidents(status: IncidentStatus?) throws -> [IncidentRecord] {
        try read { db in
            let ids: [String]
            if let status {
                ids = try String.fetchAll(
                    db,
                    sql: "SELECT id FROM incidents WHERE status = ? ORDER BY declared_at DESC, rowid DESC",
                    arguments: [status.rawValue]
                )
            } else {
                ids = try String.fetchAll(db, sql: "SELECT id FROM incidents ORDER BY declared_at DESC, rowid DESC")
            }
            return try ids.compactMap { try Catalog.fetchIncident(db, $0) }
        }
    }

    /// The open incidents, newest first.
    public func openIncidents() throws -> [IncidentRecord] {
        try incidents(status: .open)
    }

    /// The incident with this id, nil if there is none.
    public func incident(id: String) throws -> IncidentRecord? {
        try read { db in try Catalog.fetchIncident(db, id) }
    }

    /// Adds a note (`NOTE`) or a report (`REPORT`) to an incident, open or closed.
    ///
    /// - Throws: `incident.invalid` (an empty text or author, another kind), `incident.unknown`.
    @discardableResult
    public func addIncidentNote(
        incident: String,
        author: String,
        kind: String = IncidentNote.note,
        text: String
    ) throws -> IncidentNote {
        guard IncidentNote.kinds.contains(kind) else {
            throw LifeboatError(
                "incident.invalid",
                "a note of incident \(incident) is a \(IncidentNote.kinds.joined(separator: " or ")), not '\(kind)'"
            )
        }
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw LifeboatError("incident.invalid", "a note of incident \(incident) needs some text")
        }
        guard !author.isEmpty else {
            throw LifeboatError("incident.invalid", "a note of incident \(incident) needs the name of its author")
        }
        return try write { db in
            _ = try Catalog.requireIncident(db, incident)
            let time = self.now
            try db.execute(
                sql: "INSERT INTO incident_notes (incident, time, author, kind, text) VALUES (?, ?, ?, ?, ?)",
                arguments: [incident, time.nanoseconds, author, kind, text]
            )
            return IncidentNote(id: db.lastInsertedRowID, time: time, author: author, kind: kind, text: text)
        }
    }

    /// Records who asked for a job and the incident it was made under (nil: none).
    ///
    /// - Throws: `job.unknown`, `incident.unknown`, `incident.closed` (launches are made under open incidents).
    public func linkJob(_ job: String, incident: String?, requestedBy: String) throws {
        try write { db in
            guard try Catalog.fetchJob(db, job) != nil else { throw Catalog.unknownJob(job) }
            if let incident {
                let record = try Catalog.requireIncident(db, incident)
                guard record.isOpen else { throw Catalog.closedIncident(record) }
            }
            try db.execute(
                sql: "UPDATE jobs SET incident = ?, requested_by = ? WHERE id = ?",
                arguments: [incident, requestedBy, job]
            )
        }
    }

    /// The incident a job was made under and who asked for it, as `linkJob` recorded them.
    ///
    /// - Throws: `job.unknown`.
    public func jobIncident(_ job: String) throws -> (incident: String?, requestedBy: String?) {
        try read { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: "SELECT incident, requested_by FROM jobs WHERE id = ?",
                    arguments: [job]
                )
            else { throw Catalog.unknownJob(job) }
            return (row["incident"], row["requested_by"])
        }
    }

    // MARK: - Inside transactions

    static func fetchIncident(_ db: Database, _ id: String) throws -> IncidentRecord? {
        guard
            let row = try Row.fetchOne(
                db,
                sql: "SELECT \(IncidentRecord.columns) FROM incidents WHERE id = ?",
                arguments: [id]
            )
        else { return nil }
        let launches = try String.fetchAll(
            db,
            sql: "SELECT id FROM jobs WHERE incident = ? ORDER BY created_at, rowid",
            arguments: [id]
        )
        let notes = try Row.fetchAll(
            db,
            sql: "SELECT \(IncidentNote.columns) FROM incident_notes WHERE incident = ? ORDER BY id",
            arguments: [id]
        ).map(IncidentNote.init(row:))
        return IncidentRecord(row: row, launches: launches, notes: notes)
    }

    /// The incident, or `incident.unknown`.
    static func requireIncident(_ db: Database, _ id: String) throws -> IncidentRecord {
        guard let incident = try fetchIncident(db, id) else {
            throw LifeboatError(
                "incident.unknown",
                "there is no incident \(id): check the id in the list of incidents"
            )
        }
        return incident
    }

    static func closedIncident(_ incident: IncidentRecord) -> LifeboatError {
        LifeboatError(
            "incident.closed",
            "incident \(incident.id) was closed\(incident.closedBy.map { " by \($0)" } ?? "")"
                + "\(incident.closedAt.map { " at \($0)" } ?? ""): declare a new incident for a new event"
        )
    }

    private static func unknownJob(_ id: String) -> LifeboatError {
        LifeboatError("job.unknown", "there is no job \(id): check the id in the list of jobs")
    }
}
