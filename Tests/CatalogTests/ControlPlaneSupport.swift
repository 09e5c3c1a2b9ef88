import GRDB
import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

/// Everything of the control plane a failed call must leave unchanged.
struct ControlSnapshot: Equatable {
    var users: [UserRecord]
    var passwordHashes: [String]
    var tokens: [AccessTokenRecord]
    var applications: [ApplicationRecord]
    var incidents: [IncidentRecord]
    var settings: ControlSettings
    var audit: [AuditEntry]
    var auditHead: [String]
    var machines: [MachineRecord]
    var jobLinks: [String]
}

extension CatalogFixture {
    /// A password that passes the strength rules.
    static let password = "correct horse battery"

    func controlSnapshot() throws -> ControlSnapshot {
        ControlSnapshot(
            users: try catalog.users(),
            passwordHashes: try catalog.read { db in
                try String.fetchAll(db, sql: "SELECT name || ' ' || password_hash FROM users ORDER BY name")
            },
            tokens: try catalog.accessTokens(user: nil),
            applications: try catalog.applications(),
            incidents: try catalog.incidents(status: nil),
            settings: try catalog.controlSettings(),
            audit: try catalog.auditEntries(limit: 100_000),
            auditHead: try catalog.read { db in
                try String.fetchAll(db, sql: "SELECT seq || ' ' || hash FROM audit_head")
            },
            machines: try catalog.machines(includeRemoved: true),
            jobLinks: try catalog.read { db in
                try String.fetchAll(
                    db,
                    sql:
                        "SELECT id || ' ' || COALESCE(incident, '-') || ' ' || COALESCE(requested_by, '-') FROM jobs ORDER BY id"
                )
            }
        )
    }

    /// Runs `body`, which must fail with `code`, and checks that the control plane did not change.
    @discardableResult
    func expectUnchanged(
        _ code: String,
        sourceLocation: Testing.SourceLocation = #_sourceLocation,
        _ body: () throws -> Void
    ) throws -> LifeboatError? {
        let before = try controlSnapshot()
        let error = expectError(code, sourceLocation: sourceLocation, body)
        #expect(try controlSnapshot() == before, "a failed call changed the catalog", sourceLocation: sourceLocation)
        return error
    }
}
