import GRDB
import LifeboatCore

// The audit log: append-only and hash-chained (AuditChain). `audit_head` records the newest entry apart from
// the log, so that deleting the newest entries shows too. Appending reads the head, writes the entry and
// moves the head in one write transaction, so entries from several processes still form one chain.

extension Catalog {
    /// How many entries that failed their hash are compared with each other to recognise moved entries.
    private static let reorderSearchLimit = 256

    /// Whether entries can be appended (the head is there): the API refuses changes it could not record.
    public func auditRecordable() throws -> Bool {
        try read { db in try Bool.fetchOne(db, sql: "SELECT 1 FROM audit_head WHERE id = 1") ?? false }
    }

    /// Appends an entry stamped with the injected clock (never before the previous entry).
    ///
    /// - Throws: `audit.invalid` (an empty actor or action), `audit.damaged` when the head is missing (the log
    ///   was tampered with: nothing is appended until it is looked into).
    @discardableResult
    public func appendAudit(
        actor: String,
        action: String,
        target: String,
        source: String,
        result: String,
        detail: String
    ) throws -> AuditEntry {
        guard !actor.isEmpty, !action.isEmpty else {
            throw LifeboatError(
                "audit.invalid",
                "an audit entry needs an actor and an action (got '\(actor)', '\(action)')"
            )
        }
        return try write { db in
            guard let head = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit_head WHERE id = 1") else {
                throw LifeboatError(
                    "audit.damaged",
                    "the audit log's head is missing, so the log was changed outside Lifeboat: verify the audit log, "
                        + "and restore the catalog from a backup before recording more"
                )
            }
            let headSeq: Int64 = head["seq"]
            let prevHash: String = head["hash"]
            let lastTime = try Int64.fetchOne(db, sql: "SELECT time FROM audit_log WHERE seq = ?", arguments: [headSeq])
            let time = Timestamp(nanoseconds: max(self.now.nanoseconds, lastTime ?? .min))
            var entry = AuditEntry(
                seq: headSeq + 1,
                time: time,
                actor: actor,
                action: action,
                target: target,
                source: source,
                result: result,
                detail: detail,
                prevHash: prevHash,
                hash: ""
            )
            entry.hash = AuditChain.hash(of: entry)
            try db.execute(
                sql: "INSERT INTO audit_log (\(AuditEntry.columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                arguments: [
                    entry.seq, entry.time.nanoseconds, actor, action, target, source, result, detail, prevHash,
                    entry.hash,
                ]
            )
            try db.execute(
                sql: "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1",
                arguments: [entry.seq, entry.hash]
            )
            return entry
        }
    }

    /// How many entries there are of one actor and one action when given.
    public func auditCount(actor: String?, action: String?) throws -> Int {
        var conditions = ["1"]
        var values: [(any DatabaseValueConvertible)?] = []
        if let actor {
            conditions.append("actor = ?")
            values.append(actor)
        }
        if let action {
            conditions.append("action = ?")
            values.append(action)
        }
        let sql = "SELECT count(*) FROM audit_log WHERE \(conditions.joined(separator: " AND "))"
        return try read { db in try Int.fetchOne(db, sql: sql, arguments: StatementArguments(values)) ?? 0 }
    }

    /// Up to `limit` entries after `afterSeq` (skipping `offset` of them), oldest first (or newest first), of one
    /// actor and one action when given.
    public func auditEntries(
        afterSeq: Int64 = 0,
        limit: Int,
        offset: Int = 0,
        newestFirst: Bool = false,
        actor: String? = nil,
        action: String? = nil
    ) throws -> [AuditEntry] {
        var conditions = ["seq > ?"]
        var values: [(any DatabaseValueConvertible)?] = [afterSeq]
        if let actor {
            conditions.append("actor = ?")
            values.append(actor)
        }
        if let action {
            conditions.append("action = ?")
            values.append(action)
        }
        values.append(max(0, limit))
        values.append(max(0, offset))
        let arguments = StatementArguments(values)
        let sql = """
            SELECT \(AuditEntry.columns) FROM audit_log WHERE \(conditions.joined(separator: " AND "))
            ORDER BY seq \(newestFirst ? "DESC" : "ASC") LIMIT ? OFFSET ?
            """
        return try read { db in
            try Row.fetchAll(db, sql: sql, arguments: arguments).map(AuditEntry.init(row:))
        }
    }

    /// How many entries the log has.
    public func auditCount() throws -> Int {
        try read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM audit_log") ?? 0 }
    }

    /// Checks the whole log: every entry's hash, the links between entries, numbering from 1 without gaps,
    /// times that never go back, and the newest entry against the head; with `expectHead` (a head hash an
    /// earlier verification printed), also that this hash is still in the chain.
    public func verifyAudit(expectHead: String? = nil) throws -> AuditVerification {
        try read { db in
            var walk = AuditWalk(
                head: try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit_head WHERE id = 1")
                    .map { (seq: $0["seq"] as Int64, hash: $0["hash"] as String) },
                expectHead: expectHead?.lowercased()
            )
            let rows = try Row.fetchCursor(db, sql: "SELECT \(AuditEntry.columns) FROM audit_log ORDER BY seq")
            while let row = try rows.next() {
                walk.visit(AuditEntry(row: row))
            }
            return walk.finish(reorderSearchLimit: Catalog.reorderSearchLimit)
        }
    }
}

/// The state of one verification as it walks the log in seq order.
private struct AuditWalk {
    let head: (seq: Int64, hash: String)?
    let expectHead: String?
    var problems: [AuditProblem] = []
    var entries = 0
    /// The last entry that belongs to the chain (not one inserted past the head).
    var previous: AuditEntry?
    var previousMatches = true
    /// Entries whose content does not match their hash: edited, or moved from another position.
    var mismatched: [AuditEntry] = []
    var expectedFound = false

    init(head: (seq: Int64, hash: String)?, expectHead: String?) {
        self.head = head
        self.expectHead = expectHead
        self.expectedFound = expectHead == nil || expectHead == AuditChain.genesis
    }

    mutating func visit(_ entry: AuditEntry) {
        entries += 1
        if entry.hash == expectHead { expectedFound = true }
        if entry.seq < 1 {
            problem(
                entry.seq,
                .inserted,
                "entry \(entry.seq) was inserted outside Lifeboat: entries are numbered from 1"
            )
            return
        }
        if let head, entry.seq > head.seq {
            problem(
                entry.seq,
                .inserted,
                "entry \(entry.seq) was inserted outside Lifeboat: the audit head ends at entry \(head.seq)"
            )
            return
        }
        let expectedSeq = (previous?.seq ?? 0) + 1
        let gap = entry.seq > expectedSeq
        if gap {
            problem(
                expectedSeq,
                .deleted,
                "\(Self.range(expectedSeq, entry.seq - 1)) deleted: the numbering jumps to \(entry.seq)"
            )
        }
        let matches = AuditChain.hash(of: entry) == entry.hash
        if !matches {
            mismatched.append(entry)
        } else if !gap, previousMatches {
            if let previous {
                if entry.prevHash != previous.hash {
                    problem(
                        previous.seq,
                        .edited,
                        "entry \(previous.seq) was rewritten: entry \(entry.seq) was chained to different content"
                    )
                } else if entry.time < previous.time {
                    problem(
                        entry.seq,
                        .reordered,
                        "entry \(entry.seq) is dated \(entry.time), before entry \(previous.seq) (\(previous.time)): entries were reordered"
                    )
                }
            } else if entry.prevHash != AuditChain.genesis {
                problem(entry.seq, .edited, "entry \(entry.seq) was rewritten: it does not start the chain")
            }
        }
        previous = entry
        previousMatches = matches
    }

    mutating func finish(reorderSearchLimit: Int) -> AuditVerification {
        classifyMismatched(reorderSearchLimit: reorderSearchLimit)
        let lastSeq = previous?.seq ?? 0
        let lastHash = previous?.hash ?? AuditChain.genesis
        if let head {
            if head.seq > lastSeq {
                problem(
                    lastSeq + 1,
                    .deleted,
                    "\(Self.range(lastSeq + 1, head.seq)) deleted: the audit head records \(head.seq) entries, the log ends at \(lastSeq)"
                )
            } else if head.hash != lastHash {
                problem(
                    head.seq,
                    .headMismatch,
                    "entry \(head.seq) does not match the audit head: the newest entry was rewritten, or the head was changed"
                )
            }
        } else {
            problem(
                lastSeq,
                .headMismatch,
                "the audit head is missing (it records the newest entry): entries after \(lastSeq) may have been deleted"
            )
        }
        if !expectedFound, let expectHead {
            problem(
                0,
                .headMismatch,
                "the head \(expectHead) of an earlier verification is not in the chain: entries up to it were deleted or rewritten"
            )
        }
        problems.sort { ($0.seq, $0.kind.rawValue) < ($1.seq, $1.kind.rawValue) }
        return AuditVerification(
            entries: entries,
            headSeq: head?.seq ?? lastSeq,
            headHash: head?.hash ?? lastHash,
            problems: problems
        )
    }

    /// An entry whose content fails its hash was moved when its content hashes correctly at another failing
    /// entry's position (the whole row moved, or only its content); otherwise it was edited.
    private mutating func classifyMismatched(reorderSearchLimit: Int) {
        let candidates = mismatched.count <= reorderSearchLimit ? mismatched : []
        for entry in mismatched {
            let origin = candidates.first { other in
                other.seq != entry.seq
                    && (AuditChain.hash(of: entry, seq: other.seq) == entry.hash
                        || AuditChain.hash(of: entry, seq: other.seq, prevHash: other.prevHash) == other.hash)
            }
            if let origin {
                problem(
                    entry.seq,
                    .reordered,
                    "entry \(entry.seq) holds the content written as entry \(origin.seq): entries were reordered"
                )
            } else {
                problem(entry.seq, .edited, "entry \(entry.seq) was edited: its content does not match its hash")
            }
        }
    }

    private mutating func problem(_ seq: Int64, _ kind: AuditProblem.Kind, _ message: String) {
        problems.append(AuditProblem(seq: seq, kind: kind, message: message))
    }

    private static func range(_ first: Int64, _ last: Int64) -> String {
        first == last ? "entry \(first) was" : "entries \(first) to \(last) were"
    }
}
