import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: incidents")
struct IncidentTests {
    @Test("jobsPage: newest first, paged, filtered by status, each with its incident and requester")
    func jobsPage() throws {
        let f = try LaunchCatalogTests.fixture("web", "db")
        let incident = try f.catalog.declareIncident(title: "paging", severity: .low, applications: [], by: "dave")
        var made: [String] = []
        for (index, machine) in ["web", "db", "web"].enumerated() {
            f.clock.advance(seconds: 1)
            let job = try f.catalog.createLaunchJob(
                mode: index == 1 ? .recovery : .test, targets: [LaunchCatalogTests.target(machine)],
                incident: index == 1 ? incident.id : nil, requestedBy: "olga"
            )
            made.append(job.id)
        }
        let first = try f.catalog.jobsPage(status: nil, offset: 0, limit: 2)
        #expect(first.total == 3)
        #expect(first.jobs.map(\.job.id) == [made[2], made[1]])
        #expect(first.jobs[1].incident == incident.id && first.jobs[1].requestedBy == "olga")
        #expect(first.jobs[0].incident == nil)
        let second = try f.catalog.jobsPage(status: nil, offset: 2, limit: 2)
        #expect(second.total == 3 && second.jobs.map(\.job.id) == [made[0]])
        #expect(try f.catalog.jobsPage(status: .pending, offset: 0, limit: 10).total == 3)
        #expect(try f.catalog.jobsPage(status: .completed, offset: 0, limit: 10).jobs.isEmpty)
    }

    /// Machines web-1 and db-1 in application `shop`, and an application `blog`.
    static func fixture() throws -> CatalogFixture {
        let f = try LaunchCatalogTests.fixture("web-1", "db-1")
        try f.catalog.setApplication(machine: "web-1", "shop")
        try f.catalog.setApplication(machine: "db-1", "shop")
        try f.catalog.createApplication(name: "blog")
        return f
    }

    @Test("declareIncident: OPEN, its fields, applications once each in the order given; survives a reopen")
    func declare() throws {
        let f = try Self.fixture()
        let incident = try f.catalog.declareIncident(
            title: "  ransomware on the shop's database  ",
            severity: .critical,
            applications: ["shop", "blog", "shop"],
            by: "dora"
        )
        #expect(LaunchCatalogTests.isIdentifier(incident.id, prefix: "inc"), "\(incident.id)")
        #expect(incident.title == "ransomware on the shop's database")
        #expect(incident.severity == .critical)
        #expect(incident.applications == ["shop", "blog"])
        #expect(incident.status == .open && incident.isOpen)
        #expect(incident.declaredBy == "dora" && incident.declaredAt == CatalogFixture.start)
        #expect(incident.closedBy == nil && incident.closedAt == nil && incident.summary == nil)
        #expect(incident.launches.isEmpty && incident.notes.isEmpty)
        #expect(try f.catalog.incident(id: incident.id) == incident)
        #expect(try f.catalog.incident(id: "inc-0000000000000000") == nil)
        try f.reopen()
        #expect(try f.catalog.incident(id: incident.id) == incident)

        let none = try f.catalog.declareIncident(title: "power cut", severity: .low, applications: [], by: "dora")
        #expect(none.applications.isEmpty)
    }

    @Test("declareIncident errors: empty title, unknown application; nothing changes")
    func declareErrors() throws {
        let f = try Self.fixture()
        try f.expectUnchanged("incident.invalid") {
            _ = try f.catalog.declareIncident(title: " \n ", severity: .high, applications: ["shop"], by: "dora")
        }
        try f.expectUnchanged("incident.invalid") {
            _ = try f.catalog.declareIncident(title: "outage", severity: .high, applications: ["shop"], by: "")
        }
        let unknown = try f.expectUnchanged("application.unknown") {
            _ = try f.catalog.declareIncident(
                title: "outage",
                severity: .high,
                applications: ["shop", "crm"],
                by: "dora"
            )
        }
        #expect(unknown?.message.contains("crm") == true)
        try f.expectUnchanged("application.unknown") {
            _ = try f.catalog.declareIncident(
                title: "outage",
                severity: .high,
                applications: ["not a name"],
                by: "dora"
            )
        }
    }

    @Test("closeIncident: CLOSED with who, when and the summary; errors change nothing")
    func close() throws {
        let f = try Self.fixture()
        let incident = try f.catalog.declareIncident(
            title: "outage",
            severity: .high,
            applications: ["shop"],
            by: "dora"
        )
        try f.expectUnchanged("incident.invalid") {
            _ = try f.catalog.closeIncident(id: incident.id, summary: "  ", by: "dora")
        }
        try f.expectUnchanged("incident.unknown") {
            _ = try f.catalog.closeIncident(id: "inc-0000000000000000", summary: "done", by: "dora")
        }
        f.clock.advance(seconds: 7200)
        let closed = try f.catalog.closeIncident(
            id: incident.id,
            summary: "failed over to the recovery site",
            by: "erin"
        )
        #expect(closed.status == .closed && !closed.isOpen)
        #expect(closed.closedBy == "erin" && closed.closedAt == f.clock.now())
        #expect(closed.summary == "failed over to the recovery site")
        #expect(closed.declaredBy == "dora" && closed.title == "outage")
        let again = try f.expectUnchanged("incident.closed") {
            _ = try f.catalog.closeIncident(id: incident.id, summary: "again", by: "dora")
        }
        #expect(again?.message.contains("erin") == true)
    }

    @Test("incidents(status:) and openIncidents list newest first")
    func listing() throws {
        let f = try Self.fixture()
        let a = try f.catalog.declareIncident(title: "a", severity: .low, applications: [], by: "dora")
        f.clock.advance(seconds: 1)
        let b = try f.catalog.declareIncident(title: "b", severity: .medium, applications: ["blog"], by: "dora")
        f.clock.advance(seconds: 1)
        let c = try f.catalog.declareIncident(title: "c", severity: .high, applications: ["shop"], by: "dora")
        try f.catalog.closeIncident(id: b.id, summary: "fine", by: "dora")
        #expect(try f.catalog.incidents(status: nil).map(\.id) == [c.id, b.id, a.id])
        #expect(try f.catalog.incidents(status: .open).map(\.id) == [c.id, a.id])
        #expect(try f.catalog.openIncidents().map(\.id) == [c.id, a.id])
        #expect(try f.catalog.incidents(status: .closed).map(\.id) == [b.id])
        #expect(IncidentSeverity.allCases.map(\.rawValue) == ["LOW", "MEDIUM", "HIGH", "CRITICAL"])
    }

    @Test(
        "notes and reports: in order, on open and closed incidents; bad kinds, empty text and unknown incidents refused"
    )
    func notes() throws {
        let f = try Self.fixture()
        let incident = try f.catalog.declareIncident(
            title: "outage",
            severity: .high,
            applications: ["shop"],
            by: "dora"
        )
        let first = try f.catalog.addIncidentNote(
            incident: incident.id,
            author: "ann",
            kind: "NOTE",
            text: "db-1 unreachable since 03:10"
        )
        #expect(first.time == CatalogFixture.start && first.author == "ann" && first.kind == "NOTE")
        f.clock.advance(seconds: 60)
        let report = try f.catalog.addIncidentNote(
            incident: incident.id,
            author: "ann",
            kind: IncidentNote.report,
            text: "encrypted files found"
        )
        #expect(report.id > first.id)
        try f.catalog.closeIncident(id: incident.id, summary: "recovered", by: "dora")
        f.clock.advance(seconds: 60)
        let late = try f.catalog.addIncidentNote(incident: incident.id, author: "ann", text: "post-mortem on Friday")
        #expect(late.kind == "NOTE")
        #expect(try f.catalog.incident(id: incident.id)?.notes == [first, report, late])

        try f.expectUnchanged("incident.invalid") {
            _ = try f.catalog.addIncidentNote(incident: incident.id, author: "ann", kind: "GOSSIP", text: "x")
        }
        try f.expectUnchanged("incident.invalid") {
            _ = try f.catalog.addIncidentNote(incident: incident.id, author: "ann", text: "   ")
        }
        try f.expectUnchanged("incident.unknown") {
            _ = try f.catalog.addIncidentNote(incident: "inc-0000000000000000", author: "ann", text: "x")
        }
    }

    @Test("linkJob: a launch under an open incident, listed oldest first; jobIncident reads it back")
    func linkJobs() throws {
        let f = try Self.fixture()
        let incident = try f.catalog.declareIncident(
            title: "outage",
            severity: .critical,
            applications: ["shop"],
            by: "dora"
        )
        let first = try f.catalog.createLaunchJob(mode: .recovery, targets: [LaunchCatalogTests.target("web-1")])
        f.clock.advance(seconds: 1)
        let second = try f.catalog.createLaunchJob(mode: .recovery, targets: [LaunchCatalogTests.target("db-1")])
        f.clock.advance(seconds: 1)
        let drill = try f.catalog.createLaunchJob(mode: .test, targets: [LaunchCatalogTests.target("db-1")])
        try f.catalog.linkJob(second.id, incident: incident.id, requestedBy: "otto")
        try f.catalog.linkJob(first.id, incident: incident.id, requestedBy: "olga")
        try f.catalog.linkJob(drill.id, incident: nil, requestedBy: "otto")

        #expect(try f.catalog.incident(id: incident.id)?.launches == [first.id, second.id])
        var link = try f.catalog.jobIncident(first.id)
        #expect(link.incident == incident.id && link.requestedBy == "olga")
        link = try f.catalog.jobIncident(drill.id)
        #expect(link.incident == nil && link.requestedBy == "otto")
        #expect(try f.catalog.job(id: first.id) == first, "the job itself is unchanged")

        // A closed incident takes no more launches; the ones made stay linked.
        try f.catalog.closeIncident(id: incident.id, summary: "done", by: "dora")
        try f.expectUnchanged("incident.closed") {
            try f.catalog.linkJob(drill.id, incident: incident.id, requestedBy: "otto")
        }
        try f.expectUnchanged("incident.unknown") {
            try f.catalog.linkJob(drill.id, incident: "inc-0000000000000000", requestedBy: "otto")
        }
        try f.expectUnchanged("job.unknown") {
            try f.catalog.linkJob("job-0000000000000000", incident: nil, requestedBy: "otto")
        }
        expectError("job.unknown") { _ = try f.catalog.jobIncident("job-0000000000000000") }
        #expect(try f.catalog.incident(id: incident.id)?.launches == [first.id, second.id])
    }
}
