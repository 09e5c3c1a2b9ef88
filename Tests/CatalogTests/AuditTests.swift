import Foundation
import GRDB
import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: the hash-chained audit log")
struct AuditTests {
    /// A catalog with `count` audit entries, one second apart.
    static func fixture(entries count: Int = 10) throws -> CatalogFixture {
        let f = try CatalogFixture()
        for index in 1...count {
            try f.catalog.appendAudit(
                actor: index % 2 == 0 ? "alice" : "bob",
                action: index % 3 == 0 ? "launch.drill" : "user.create",
                target: "target-\(index)",
                source: "192.0.2.\(index)",
                result: "ok",
                detail: "entry number \(index)"
            )
            f.clock.advance(seconds: 1)
        }
        return f
    }

    /// Runs SQL on the catalog file through a connection of its own, as someone with access to the file would.
    static func tamper(_ f: CatalogFixture, _ body: (Database) throws -> Void) throws {
        let queue = try DatabaseQueue(path: f.path)
        try queue.write(body)
        try queue.close()
    }

    static func tamper(_ f: CatalogFixture, sql: String) throws {
        try tamper(f) { db in try db.execute(sql: sql) }
    }

    /// The problems as (kind, seq) pairs, in order.
    static func found(_ f: CatalogFixture, expectHead: String? = nil) throws -> [String] {
        try f.catalog.verifyAudit(expectHead: expectHead).problems.map { "\($0.kind.rawValue) \($0.seq)" }
    }

    // MARK: - Appending and reading

    @Test("appendAudit chains entries: seq 1, 2, 3…, each prevHash the previous hash, the head follows")
    func append() throws {
        let f = try CatalogFixture()
        let first = try f.catalog.appendAudit(
            actor: "alice",
            action: "user.create",
            target: "bob",
            source: "127.0.0.1",
            result: "ok",
            detail: "roles: operator"
        )
        #expect(first.seq == 1)
        #expect(first.time == CatalogFixture.start)
        #expect(first.prevHash == AuditChain.genesis)
        #expect(first.hash == AuditChain.hash(of: first))
        f.clock.advance(seconds: 1)
        let second = try f.catalog.appendAudit(
            actor: "bob",
            action: "login",
            target: "bob",
            source: "cli",
            result: "denied",
            detail: ""
        )
        #expect(second.seq == 2 && second.prevHash == first.hash && second.hash != first.hash)
        #expect(try f.catalog.auditEntries(limit: 10) == [first, second])
        #expect(try f.catalog.auditCount() == 2)
        let verification = try f.catalog.verifyAudit()
        #expect(verification.intact && verification.problems.isEmpty)
        #expect(verification.entries == 2 && verification.headSeq == 2 && verification.headHash == second.hash)
        try f.reopen()
        #expect(try f.catalog.auditEntries(limit: 10) == [first, second])
        #expect(
            try f.catalog.appendAudit(actor: "a", action: "b", target: "", source: "", result: "", detail: "").seq == 3
        )
    }

    @Test("the hash follows the documented encoding (checked against an independent implementation)")
    func documentedEncoding() {
        // Python: sha256(b"".join(len(f).to_bytes(8, "big") + f for f in [...])).hexdigest()
        let hash = AuditChain.hash(
            seq: 1,
            time: Timestamp(nanoseconds: 1_790_000_000_000_000_000),
            actor: "alice",
            action: "user.create",
            target: "bob",
            source: "127.0.0.1",
            result: "ok",
            detail: "roles: operator, café",
            prevHash: AuditChain.genesis
        )
        #expect(hash == "47b7c9f5faf50596fd819592eb0d3660042faf8b7f9eb67e5b62673db34538d3")
        // Length prefixes keep field boundaries: moving a character between fields changes the hash.
        let shifted = AuditChain.hash(
            seq: 1,
            time: Timestamp(nanoseconds: 1_790_000_000_000_000_000),
            actor: "alic",
            action: "euser.create",
            target: "bob",
            source: "127.0.0.1",
            result: "ok",
            detail: "roles: operator, café",
            prevHash: AuditChain.genesis
        )
        #expect(shifted != hash)
    }

    @Test("times never go back, even when the clock does")
    func monotonicTime() throws {
        let f = try CatalogFixture()
        f.clock.advance(seconds: 100)
        let first = try f.catalog.appendAudit(actor: "a", action: "x", target: "", source: "", result: "ok", detail: "")
        f.clock.advance(seconds: -50)
        let second = try f.catalog.appendAudit(
            actor: "a",
            action: "x",
            target: "",
            source: "",
            result: "ok",
            detail: ""
        )
        #expect(second.time == first.time)
        #expect(try f.catalog.verifyAudit().intact)
    }

    @Test("auditEntries: after a seq, limited, oldest or newest first, by actor and by action")
    func reading() throws {
        let f = try Self.fixture(entries: 12)
        #expect(try f.catalog.auditEntries(limit: 100).map(\.seq) == Array(1...12))
        #expect(try f.catalog.auditEntries(afterSeq: 9, limit: 100).map(\.seq) == [10, 11, 12])
        #expect(try f.catalog.auditEntries(limit: 3).map(\.seq) == [1, 2, 3])
        #expect(try f.catalog.auditEntries(limit: 3, newestFirst: true).map(\.seq) == [12, 11, 10])
        #expect(try f.catalog.auditEntries(afterSeq: 10, limit: 5, newestFirst: true).map(\.seq) == [12, 11])
        #expect(try f.catalog.auditEntries(limit: 100, actor: "alice").map(\.seq) == [2, 4, 6, 8, 10, 12])
        #expect(try f.catalog.auditEntries(limit: 100, action: "launch.drill").map(\.seq) == [3, 6, 9, 12])
        #expect(
            try f.catalog.auditEntries(limit: 100, newestFirst: true, actor: "alice", action: "launch.drill").map(\.seq)
                == [12, 6]
        )
        #expect(try f.catalog.auditEntries(limit: 0).isEmpty)
        #expect(try f.catalog.auditEntries(limit: 100, actor: "nobody").isEmpty)
        let entry = try #require(try f.catalog.auditEntries(afterSeq: 4, limit: 1).first)
        #expect(entry.actor == "bob" && entry.target == "target-5" && entry.source == "192.0.2.5")
        #expect(entry.detail == "entry number 5" && entry.result == "ok")
        #expect(entry.time == Timestamp(seconds: CatalogFixture.start.seconds + 4))
    }

    @Test("an entry needs an actor and an action; a refused append changes nothing")
    func invalid() throws {
        let f = try Self.fixture(entries: 2)
        try f.expectUnchanged("audit.invalid") {
            _ = try f.catalog.appendAudit(actor: "", action: "x", target: "", source: "", result: "", detail: "")
        }
        try f.expectUnchanged("audit.invalid") {
            _ = try f.catalog.appendAudit(actor: "a", action: "", target: "", source: "", result: "", detail: "")
        }
    }

    @Test("many entries from several threads form one intact chain")
    func concurrentAppends() async throws {
        let f = try CatalogFixture()
        let catalog = f.catalog
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    for index in 0..<50 {
                        try catalog.appendAudit(
                            actor: "worker-\(worker)",
                            action: "test",
                            target: "\(index)",
                            source: "",
                            result: "ok",
                            detail: ""
                        )
                    }
                }
            }
            try await group.waitForAll()
        }
        let verification = try f.catalog.verifyAudit()
        #expect(verification.intact, "\(verification.problems)")
        #expect(verification.entries == 200 && verification.headSeq == 200)
        #expect(try f.catalog.auditCount() == 200)
    }

    // MARK: - Tampering with the file

    @Test("an edited field: edited, naming the entry")
    func editedField() throws {
        let f = try Self.fixture()
        try Self.tamper(f, sql: "UPDATE audit_log SET detail = 'nothing happened' WHERE seq = 7")
        let verification = try f.catalog.verifyAudit()
        #expect(!verification.intact)
        #expect(verification.problems.map { "\($0.kind.rawValue) \($0.seq)" } == ["edited 7"])
        #expect(verification.problems.first?.message == "entry 7 was edited: its content does not match its hash")

        for (column, value) in [
            ("actor", "'mallory'"), ("time", "time - 1"), ("result", "'denied'"), ("prev_hash", "hash"),
        ] {
            let g = try Self.fixture()
            try Self.tamper(g, sql: "UPDATE audit_log SET \(column) = \(value) WHERE seq = 4")
            #expect(try Self.found(g) == ["edited 4"], "\(column)")
        }
    }

    @Test("an edited entry whose hash was recomputed: the next entry's link shows it")
    func rewrittenEntry() throws {
        let f = try Self.fixture()
        try Self.tamper(f) { db in
            let row = try #require(
                try Row.fetchOne(db, sql: "SELECT \(AuditEntry.columns) FROM audit_log WHERE seq = 7")
            )
            var entry = AuditEntry(row: row)
            entry.actor = "mallory"
            try db.execute(
                sql: "UPDATE audit_log SET actor = ?, hash = ? WHERE seq = 7",
                arguments: [entry.actor, AuditChain.hash(of: entry)]
            )
        }
        let problems = try f.catalog.verifyAudit().problems
        #expect(problems.map { "\($0.kind.rawValue) \($0.seq)" } == ["edited 7"])
        #expect(problems.first?.message.contains("entry 8") == true)
    }

    @Test("a deleted middle entry: deleted, naming it")
    func deletedMiddle() throws {
        let f = try Self.fixture()
        try Self.tamper(f, sql: "DELETE FROM audit_log WHERE seq = 5")
        let verification = try f.catalog.verifyAudit()
        #expect(verification.problems.map { "\($0.kind.rawValue) \($0.seq)" } == ["deleted 5"])
        #expect(verification.problems.first?.message.contains("entry 5 was deleted") == true)
        #expect(verification.entries == 9)

        let g = try Self.fixture()
        try Self.tamper(g, sql: "DELETE FROM audit_log WHERE seq IN (1, 2, 6, 7, 8)")
        #expect(try Self.found(g) == ["deleted 1", "deleted 6"])
        #expect(try g.catalog.verifyAudit().problems.last?.message.contains("entries 6 to 8 were deleted") == true)
    }

    @Test("the deleted newest entry: caught by the head")
    func deletedNewest() throws {
        let f = try Self.fixture()
        try Self.tamper(f, sql: "DELETE FROM audit_log WHERE seq = 10")
        let verification = try f.catalog.verifyAudit()
        #expect(verification.problems.map { "\($0.kind.rawValue) \($0.seq)" } == ["deleted 10"])
        #expect(verification.headSeq == 10)
        // Appending afterwards does not hide it.
        try f.catalog.appendAudit(actor: "a", action: "x", target: "", source: "", result: "ok", detail: "")
        #expect(try Self.found(f) == ["deleted 10"])
    }

    @Test("the deleted newest entry and the head: the missing head shows")
    func deletedNewestAndHead() throws {
        let f = try Self.fixture()
        try Self.tamper(f, sql: "DELETE FROM audit_log WHERE seq = 10; DELETE FROM audit_head")
        let verification = try f.catalog.verifyAudit()
        #expect(verification.problems.map { "\($0.kind.rawValue) \($0.seq)" } == ["head-mismatch 9"])
        #expect(verification.problems.first?.message.contains("head is missing") == true)
        // Nothing more is recorded on a log in that state.
        try f.expectUnchanged("audit.damaged") {
            _ = try f.catalog.appendAudit(actor: "a", action: "x", target: "", source: "", result: "ok", detail: "")
        }
    }

    @Test("the newest entry deleted and the head moved back: only a head printed earlier shows it")
    func rolledBackHead() throws {
        let f = try Self.fixture()
        let printed = try f.catalog.verifyAudit().headHash
        #expect(try Self.found(f, expectHead: printed).isEmpty)
        try Self.tamper(
            f,
            sql: """
                DELETE FROM audit_log WHERE seq = 10;
                UPDATE audit_head SET seq = 9, hash = (SELECT hash FROM audit_log WHERE seq = 9);
                """
        )
        #expect(try f.catalog.verifyAudit().intact, "a consistent truncation is invisible without an anchor")
        let problems = try f.catalog.verifyAudit(expectHead: printed).problems
        #expect(problems.map { "\($0.kind.rawValue) \($0.seq)" } == ["head-mismatch 0"])
        #expect(problems.first?.message.contains(printed) == true)
    }

    @Test("an expected head stays found while entries are appended after it")
    func expectedHeadAfterAppends() throws {
        let f = try Self.fixture(entries: 3)
        let printed = try f.catalog.verifyAudit().headHash
        try f.catalog.appendAudit(actor: "a", action: "x", target: "", source: "", result: "ok", detail: "")
        #expect(try f.catalog.verifyAudit(expectHead: printed).intact)
        #expect(try f.catalog.verifyAudit(expectHead: printed.uppercased()).intact)
        #expect(try Self.found(f, expectHead: String(repeating: "ab", count: 32)) == ["head-mismatch 0"])
    }

    @Test("two entries swapped (whole rows, or only their content): reordered, naming both")
    func reordered() throws {
        let f = try Self.fixture()
        try Self.swap(f, 3, 6, columns: "time, actor, action, target, source, result, detail, prev_hash, hash")
        let problems = try f.catalog.verifyAudit().problems
        #expect(problems.map { "\($0.kind.rawValue) \($0.seq)" } == ["reordered 3", "reordered 6"])
        #expect(problems.first?.message.contains("entry 3 holds the content written as entry 6") == true)

        let g = try Self.fixture()
        try Self.swap(g, 3, 6, columns: "time, actor, action, target, source, result, detail")
        #expect(try Self.found(g) == ["reordered 3", "reordered 6"])

        // Renumbering rows moves them too.
        let h = try Self.fixture()
        try Self.tamper(
            h,
            sql: """
                UPDATE audit_log SET seq = -2 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 8;
                UPDATE audit_log SET seq = 8 WHERE seq = -2;
                """
        )
        #expect(try Self.found(h) == ["reordered 2", "reordered 8"])
    }

    @Test("a forged row: after the head, or numbered below 1, it is inserted")
    func inserted() throws {
        let f = try Self.fixture()
        let last = try #require(try f.catalog.auditEntries(limit: 1, newestFirst: true).first)
        var forged = AuditEntry(
            seq: 11,
            time: Timestamp(nanoseconds: last.time.nanoseconds + 1),
            actor: "alice",
            action: "user.delete",
            target: "mallory",
            source: "127.0.0.1",
            result: "ok",
            detail: "",
            prevHash: last.hash,
            hash: ""
        )
        forged.hash = AuditChain.hash(of: forged)
        try Self.insert(f, forged)
        let problems = try f.catalog.verifyAudit().problems
        #expect(problems.map { "\($0.kind.rawValue) \($0.seq)" } == ["inserted 11"])
        #expect(problems.first?.message.contains("entry 11 was inserted") == true)

        let g = try Self.fixture()
        var early = forged
        early.seq = 0
        early.prevHash = AuditChain.genesis
        early.hash = AuditChain.hash(of: early)
        try Self.insert(g, early)
        #expect(try Self.found(g) == ["inserted 0"])
    }

    @Test("a changed head: head-mismatch for the newest entry")
    func changedHead() throws {
        let f = try Self.fixture()
        try Self.tamper(f, sql: "UPDATE audit_head SET hash = '\(String(repeating: "1", count: 64))'")
        #expect(try Self.found(f) == ["head-mismatch 10"])
        let g = try Self.fixture()
        try Self.tamper(g, sql: "UPDATE audit_head SET seq = 12")
        #expect(try Self.found(g) == ["deleted 11"])
    }

    @Test("an entry dated before the one it follows, chain rewritten from there: reordered")
    func timeGoesBack() throws {
        let f = try Self.fixture(entries: 5)
        // Rewrite entry 4 earlier than 3 and re-chain everything after it, head included: the hashes all agree.
        try Self.tamper(f) { db in
            var entries = try Row.fetchAll(db, sql: "SELECT \(AuditEntry.columns) FROM audit_log ORDER BY seq").map(
                AuditEntry.init(row:)
            )
            entries[3].time = Timestamp(nanoseconds: entries[2].time.nanoseconds - 1)
            for index in 3..<entries.count {
                entries[index].prevHash = entries[index - 1].hash
                entries[index].hash = AuditChain.hash(of: entries[index])
                try db.execute(
                    sql: "UPDATE audit_log SET time = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                    arguments: [
                        entries[index].time.nanoseconds, entries[index].prevHash, entries[index].hash,
                        entries[index].seq,
                    ]
                )
            }
            try db.execute(sql: "UPDATE audit_head SET hash = ?", arguments: [entries[4].hash])
        }
        #expect(try Self.found(f) == ["reordered 4"])
    }

    // MARK: - Helpers

    /// Swaps `columns` between the rows of `a` and `b`.
    static func swap(_ f: CatalogFixture, _ a: Int64, _ b: Int64, columns: String) throws {
        try tamper(f) { db in
            let rowA = try #require(
                try Row.fetchOne(db, sql: "SELECT \(columns) FROM audit_log WHERE seq = ?", arguments: [a])
            )
            let rowB = try #require(
                try Row.fetchOne(db, sql: "SELECT \(columns) FROM audit_log WHERE seq = ?", arguments: [b])
            )
            let names = columns.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let assignments = names.map { "\($0) = ?" }.joined(separator: ", ")
            for (row, seq) in [(rowB, a), (rowA, b)] {
                let values = names.map { row[$0] as DatabaseValue }
                try db.execute(
                    sql: "UPDATE audit_log SET \(assignments) WHERE seq = ?",
                    arguments: StatementArguments(values + [seq.databaseValue])
                )
            }
        }
    }

    static func insert(_ f: CatalogFixture, _ entry: AuditEntry) throws {
        try tamper(f) { db in
            try db.execute(
                sql: "INSERT INTO audit_log (\(AuditEntry.columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                arguments: [
                    entry.seq, entry.time.nanoseconds, entry.actor, entry.action, entry.target, entry.source,
                    entry.result,
                    entry.detail, entry.prevHash, entry.hash,
                ]
            )
        }
    }
}
