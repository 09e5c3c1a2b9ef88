import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: the v4-control-plane migration")
struct ControlPlaneMigrationTests {
    /// Undoes v4-control-plane: what a catalog written by the previous release looks like.
    static let undoV4 = """
        DROP TABLE audit_head; DROP TABLE audit_log; DROP TABLE settings;
        DROP INDEX jobs_by_incident;
        ALTER TABLE jobs DROP COLUMN incident; ALTER TABLE jobs DROP COLUMN requested_by;
        DROP TABLE incident_notes; DROP TABLE incidents;
        DROP INDEX machines_by_application;
        DROP TABLE applications; DROP TABLE access_tokens; DROP TABLE users;
        DELETE FROM grdb_migrations WHERE identifier = 'v4-control-plane';
        """

    @Test("v4-control-plane is the newest migration; a fresh catalog has an empty audit chain and no users")
    func fresh() throws {
        let f = try CatalogFixture()
        #expect(Migrations.identifiers.last == "v4-control-plane")
        #expect(
            Migrations.identifiers.firstIndex(of: "v4-control-plane")! > Migrations.identifiers.firstIndex(
                of: "v3-launch"
            )!
        )
        #expect(try f.catalog.appliedMigrations() == Migrations.identifiers)
        #expect(try f.catalog.users().isEmpty)
        #expect(try f.catalog.applications().isEmpty)
        #expect(try f.catalog.auditCount() == 0)
        let verification = try f.catalog.verifyAudit()
        #expect(verification.intact && verification.headSeq == 0 && verification.headHash == AuditChain.genesis)
    }

    @Test("a v3 catalog is upgraded: machines and jobs keep their data, applications are made from machines")
    func upgradeFromV3() throws {
        let f = try LaunchCatalogTests.fixture("web-1", "db-1", "cache-1", "old-1")
        try f.catalog.setApplication(machine: "web-1", "shop")
        try f.catalog.setApplication(machine: "db-1", "shop")
        try f.catalog.setApplication(machine: "old-1", "legacy")
        try f.catalog.removeMachine(named: "old-1")
        try f.catalog.setSettings(machine: "web-1", throttleMbps: 40, maxFreezeMilliseconds: nil)
        let job = try f.catalog.createLaunchJob(mode: .test, targets: [LaunchCatalogTests.target("web-1")])
        // Read before going back to v3: machine records are read with the v4 schema (their launch settings fall
        // back to the application's), which a catalog always has once it is open.
        let machines = try f.catalog.machines(includeRemoved: true)
        try f.catalog.execute(sql: Self.undoV4)
        #expect(try !f.catalog.appliedMigrations().contains("v4-control-plane"))

        f.clock.advance(seconds: 3600)
        try f.reopen()
        #expect(try f.catalog.appliedMigrations() == Migrations.identifiers)
        #expect(try f.catalog.machines(includeRemoved: true) == machines)
        #expect(try f.catalog.job(id: job.id) == job)
        let link = try f.catalog.jobIncident(job.id)
        #expect(link.incident == nil && link.requestedBy == nil)
        let applications = try f.catalog.applications()
        #expect(applications.map(\.name) == ["legacy", "shop"])
        #expect(
            applications.allSatisfy { $0.createdAt == f.clock.now() && $0.description == "" && $0.rpoSeconds == nil }
        )
        #expect(applications[1].machines == ["db-1", "web-1"])
        #expect(applications[0].machines == [], "only a removed machine named it")
        #expect(try f.catalog.users().isEmpty)
        #expect(try f.catalog.controlSettings() == ControlSettings())
        #expect(try f.catalog.verifyAudit().intact)
        try f.catalog.appendAudit(
            actor: "system",
            action: "upgrade",
            target: "catalog",
            source: "test",
            result: "ok",
            detail: ""
        )
        #expect(try f.catalog.verifyAudit().intact)
    }
}
