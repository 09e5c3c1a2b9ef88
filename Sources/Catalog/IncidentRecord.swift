import Foundation
import GRDB
public import LifeboatCore

/// How bad an incident is, as the decider who declares it judges.
public enum IncidentSeverity: String, Sendable, Hashable, Codable, CaseIterable {
    case low = "LOW"
    case medium = "MEDIUM"
    case high = "HIGH"
    case critical = "CRITICAL"
}

/// An incident is OPEN from its declaration until a decider closes it with a summary.
public enum IncidentStatus: String, Sendable, Hashable, Codable, CaseIterable {
    case open = "OPEN"
    case closed = "CLOSED"
}

/// One entry of an incident's log: an analyst's note, or a report for the decision-makers.
public struct IncidentNote: Sendable, Hashable {
    /// A plain observation.
    public static let note = "NOTE"
    /// An analysis written for the decision-makers.
    public static let report = "REPORT"
    /// The kinds a note may have.
    public static let kinds = [note, report]

    /// Increasing with every note recorded, across incidents.
    public var id: Int64
    public var time: Timestamp
    public var author: String
    /// `NOTE` or `REPORT`.
    public var kind: String
    public var text: String

    public init(id: Int64, time: Timestamp, author: String, kind: String, text: String) {
        self.id = id
        self.time = time
        self.author = author
        self.kind = kind
        self.text = text
    }
}

/// A declared incident: what happened, which applications it touches, who declared and closed it, the
/// launches made under it and its notes.
public struct IncidentRecord: Sendable, Hashable {
    /// `inc-<16 hex>`.
    public var id: String
    public var title: String
    public var severity: IncidentSeverity
    /// The applications it affects, in the order given at declaration.
    public var applications: [String]
    public var status: IncidentStatus
    public var declaredBy: String
    public var declaredAt: Timestamp
    public var closedBy: String?
    public var closedAt: Timestamp?
    /// What happened and what was done, written when it was closed.
    public var summary: String?
    /// The ids of the jobs launched under it, oldest first.
    public var launches: [String]
    /// Its notes, oldest first.
    public var notes: [IncidentNote]

    public init(
        id: String,
        title: String,
        severity: IncidentSeverity,
        applications: [String],
        status: IncidentStatus,
        declaredBy: String,
        declaredAt: Timestamp,
        closedBy: String? = nil,
        closedAt: Timestamp? = nil,
        summary: String? = nil,
        launches: [String] = [],
        notes: [IncidentNote] = []
    ) {
        self.id = id
        self.title = title
        self.severity = severity
        self.applications = applications
        self.status = status
        self.declaredBy = declaredBy
        self.declaredAt = declaredAt
        self.closedBy = closedBy
        self.closedAt = closedAt
        self.summary = summary
        self.launches = launches
        self.notes = notes
    }

    /// Whether launches may still be made under it.
    public var isOpen: Bool { status == .open }
}

extension IncidentRecord {
    static let columns = """
        id, title, severity, applications, status, declared_by, declared_at, closed_by, closed_at, summary
        """

    init(row: Row, launches: [String], notes: [IncidentNote]) {
        let applications =
            (row["applications"] as String?)
            .flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) } ?? []
        self.init(
            id: row["id"],
            title: row["title"],
            severity: IncidentSeverity(rawValue: row["severity"]) ?? .critical,
            applications: applications,
            status: IncidentStatus(rawValue: row["status"]) ?? .open,
            declaredBy: row["declared_by"],
            declaredAt: Timestamp(nanoseconds: row["declared_at"]),
            closedBy: row["closed_by"],
            closedAt: (row["closed_at"] as Int64?).map(Timestamp.init(nanoseconds:)),
            summary: row["summary"],
            launches: launches,
            notes: notes
        )
    }
}

extension IncidentNote {
    static let columns = "id, time, author, kind, text"

    init(row: Row) {
        self.init(
            id: row["id"],
            time: Timestamp(nanoseconds: row["time"]),
            author: row["author"],
            kind: row["kind"],
            text: row["text"]
        )
    }
}
