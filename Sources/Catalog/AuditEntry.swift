import Crypto
import GRDB
public import LifeboatCore

/// One entry of the audit log: who did what to what, from where, with what result. Each entry carries the
/// hash of the one before it, so that editing, deleting or reordering entries breaks the chain.
public struct AuditEntry: Sendable, Hashable {
    /// 1, 2, 3… without gaps.
    public var seq: Int64
    /// Never before the previous entry's time.
    public var time: Timestamp
    /// The user (or `system`) who acted.
    public var actor: String
    /// What was done (`user.create`, `launch.recovery`, `login.failed`…).
    public var action: String
    /// What it was done to (a user, a machine, an incident…).
    public var target: String
    /// Where the request came from (an address, `cli`).
    public var source: String
    /// `ok`, `denied`, `failed`, or an error code.
    public var result: String
    /// Anything else worth keeping, for a person.
    public var detail: String
    /// The previous entry's hash; 64 zeros for the first entry.
    public var prevHash: String
    /// `AuditChain.hash` of this entry.
    public var hash: String

    public init(
        seq: Int64,
        time: Timestamp,
        actor: String,
        action: String,
        target: String,
        source: String,
        result: String,
        detail: String,
        prevHash: String,
        hash: String
    ) {
        self.seq = seq
        self.time = time
        self.actor = actor
        self.action = action
        self.target = target
        self.source = source
        self.result = result
        self.detail = detail
        self.prevHash = prevHash
        self.hash = hash
    }
}

/// The hash chain of the audit log, specified so that a second implementation can verify a log.
///
/// An entry's hash is the lowercase hexadecimal SHA-256 of the concatenation, in this order, of the nine
/// fields seq, time, actor, action, target, source, result, detail, prev_hash, each written as its length
/// in bytes (an unsigned 64-bit big-endian integer, 8 bytes) followed by its bytes. seq and time (nanoseconds
/// since the Unix epoch) are written as decimal ASCII digits (with a leading `-` if negative, no leading
/// zeros); the text fields as UTF-8; prev_hash as its 64 lowercase hexadecimal characters, 64 `0`s for the
/// first entry. In Python:
/// `sha256(b"".join(len(f).to_bytes(8, "big") + f for f in [str(seq).encode(), str(time).encode(),
/// actor.encode(), action.encode(), target.encode(), source.encode(), result.encode(), detail.encode(),
/// prev_hash.encode()])).hexdigest()`.
///
/// The chain shows changes made by anyone who does not also rewrite every later hash and the head; the head
/// hash printed by a verification, kept elsewhere, shows even that (`verifyAudit(expectHead:)`).
public enum AuditChain {
    /// The previous hash of the first entry.
    public static let genesis = String(repeating: "0", count: 64)

    /// The hash of an entry with these fields.
    public static func hash(
        seq: Int64,
        time: Timestamp,
        actor: String,
        action: String,
        target: String,
        source: String,
        result: String,
        detail: String,
        prevHash: String
    ) -> String {
        var bytes: [UInt8] = []
        for field in [String(seq), String(time.nanoseconds), actor, action, target, source, result, detail, prevHash] {
            let utf8 = Array(field.utf8)
            let length = UInt64(utf8.count)
            for shift in stride(from: 56, through: 0, by: -8) {
                bytes.append(UInt8(truncatingIfNeeded: length >> UInt64(shift)))
            }
            bytes.append(contentsOf: utf8)
        }
        return Hex.encode(SHA256.hash(data: bytes))
    }

    /// The hash `entry` should have: of its own fields, or of its content placed at another `seq` after
    /// another `prevHash` (to recognise an entry that was moved).
    static func hash(of entry: AuditEntry, seq: Int64? = nil, prevHash: String? = nil) -> String {
        hash(
            seq: seq ?? entry.seq,
            time: entry.time,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            source: entry.source,
            result: entry.result,
            detail: entry.detail,
            prevHash: prevHash ?? entry.prevHash
        )
    }
}

/// What `verifyAudit` found.
public struct AuditVerification: Sendable, Hashable {
    /// How many rows the log has.
    public var entries: Int
    /// The newest entry as the audit head records it (the last row's, when the head itself is missing).
    public var headSeq: Int64
    /// Print it and keep it elsewhere: a later `verifyAudit(expectHead:)` checks the chain still contains it.
    public var headHash: String
    /// Every problem found, in seq order; empty when the log is intact.
    public var problems: [AuditProblem]

    public init(entries: Int, headSeq: Int64, headHash: String, problems: [AuditProblem]) {
        self.entries = entries
        self.headSeq = headSeq
        self.headHash = headHash
        self.problems = problems
    }

    /// Whether no problem was found.
    public var intact: Bool { problems.isEmpty }
}

/// One way the audit log differs from what Lifeboat wrote.
public struct AuditProblem: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// An entry's content does not match its hash, or a later entry was chained to different content.
        case edited
        /// Entries are missing: a gap in the numbering, or fewer entries than the head records.
        case deleted
        /// An entry holds content written at another position, or is dated before the entry it follows.
        case reordered
        /// The head is missing or disagrees with the newest entry, or an expected head is not in the chain.
        case headMismatch = "head-mismatch"
        /// An entry beyond the head, or numbered below 1: not written by Lifeboat.
        case inserted
    }

    /// The entry concerned (the first one, for a range; 0 when no entry can be named).
    public var seq: Int64
    public var kind: Kind
    /// A sentence naming the entry and what is wrong with it.
    public var message: String

    public init(seq: Int64, kind: Kind, message: String) {
        self.seq = seq
        self.kind = kind
        self.message = message
    }
}

extension AuditEntry {
    static let columns = "seq, time, actor, action, target, source, result, detail, prev_hash, hash"

    init(row: Row) {
        self.init(
            seq: row["seq"],
            time: Timestamp(nanoseconds: row["time"]),
            actor: row["actor"],
            action: row["action"],
            target: row["target"],
            source: row["source"],
            result: row["result"],
            detail: row["detail"],
            prevHash: row["prev_hash"],
            hash: row["hash"]
        )
    }
}
