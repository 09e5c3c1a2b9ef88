import Crypto
import GRDB
public import LifeboatCore

// Enrollment tokens: one-time, expiring secrets an agent presents once to get its client certificate.
// Only the SHA-256 of a secret is stored, and a secret is found by the hash of what the agent presented,
// so neither the stored data nor the lookup's timing reveals a usable secret.

extension Catalog {
    /// Creates a one-time enrollment token valid for `seconds` from now; the returned secret is shown once.
    ///
    /// - Throws: `enroll.invalid-validity` when `seconds` is not positive or too large.
    public func createEnrollmentToken(validFor seconds: Int64, note: String? = nil) throws -> EnrollmentToken {
        let (validity, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard seconds > 0, !overflow else {
            throw LifeboatError(
                "enroll.invalid-validity",
                "an enrollment token must be valid for a positive number of seconds, got \(seconds)"
            )
        }
        var random = SystemRandomNumberGenerator()
        let secretBytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        let secret = Hex.encode(secretBytes)
        let hash = Array(SHA256.hash(data: secretBytes))
        return try write { db in
            let now = self.now
            var id: String
            repeat {
                id = Hex.encode((0..<4).map { _ in UInt8.random(in: .min ... .max, using: &random) })
            } while try Bool.fetchOne(db, sql: "SELECT 1 FROM enrollment_tokens WHERE id = ?", arguments: [id]) != nil
            let expiresAt = Timestamp(nanoseconds: now.nanoseconds.addingReportingOverflow(validity).partialValue)
            try db.execute(
                sql: """
                    INSERT INTO enrollment_tokens (id, secret_hash, created_at, expires_at, note)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [id, Hex.encode(hash), now.nanoseconds, expiresAt.nanoseconds, note]
            )
            return EnrollmentToken(id: id, secret: secret, expiresAt: expiresAt)
        }
    }

    /// Every enrollment token, oldest first (without secrets).
    public func enrollmentTokens() throws -> [EnrollmentTokenRecord] {
        try read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT id, created_at, expires_at, used_at, used_by, note FROM enrollment_tokens ORDER BY created_at, id"
            ).map { row in
                EnrollmentTokenRecord(
                    id: row["id"],
                    createdAt: Timestamp(nanoseconds: row["created_at"]),
                    expiresAt: Timestamp(nanoseconds: row["expires_at"]),
                    usedAt: (row["used_at"] as Int64?).map(Timestamp.init(nanoseconds:)),
                    usedBy: row["used_by"],
                    note: row["note"]
                )
            }
        }
    }

    /// Deletes an unused token so that it can no longer be redeemed (a used token stays, for the record).
    ///
    /// - Throws: `enroll.unknown-token` when no token has this id, `enroll.token-used` when it was redeemed.
    public func deleteEnrollmentToken(id: String) throws {
        try write { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: "SELECT used_at FROM enrollment_tokens WHERE id = ?",
                    arguments: [id]
                )
            else {
                throw LifeboatError("enroll.unknown-token", "there is no enrollment token with id \(id)")
            }
            guard (row["used_at"] as Int64?) == nil else {
                throw LifeboatError(
                    "enroll.token-used",
                    "enrollment token \(id) was used already; it stays for the record"
                )
            }
            try db.execute(sql: "DELETE FROM enrollment_tokens WHERE id = ?", arguments: [id])
        }
    }

    /// Redeems a token for `machine` in one transaction: checks the token (known, unused, unexpired) and
    /// that no active machine has this name, marks the token used, and enrolls the machine with this
    /// certificate — a new machine, or a removed one re-activated (its settings and point history kept, its
    /// replication status reset to INITIATING). A failed redeem changes nothing. The caller records the event.
    ///
    /// - Throws: `name.invalid`, `enroll.bad-token`, `enroll.token-used`, `enroll.token-expired`,
    ///   `enroll.machine-exists`, `enroll.bad-certificate` (empty or revoked serial).
    public func redeemEnrollmentToken(
        secret: String,
        machine: String,
        certificateSerial: String,
        certificateExpires: Timestamp
    ) throws {
        try Names.validate(machine, kind: "machine")
        guard !certificateSerial.isEmpty else {
            throw LifeboatError("enroll.bad-certificate", "the certificate serial for machine \(machine) is empty")
        }
        let hash = Hex.decode(secret).flatMap { $0.count == 32 ? Array(SHA256.hash(data: $0)) : nil }
        try write { db in
            let now = self.now
            guard let hash,
                let token = try Row.fetchOne(
                    db,
                    sql: "SELECT id, expires_at, used_at, used_by FROM enrollment_tokens WHERE secret_hash = ?",
                    arguments: [Hex.encode(hash)]
                )
            else {
                throw LifeboatError(
                    "enroll.bad-token",
                    "the enrollment token is not valid here: check that it was copied whole, or create a new one"
                )
            }
            let id: String = token["id"]
            if let usedAt = token["used_at"] as Int64? {
                let by: String = token["used_by"] ?? "?"
                throw LifeboatError(
                    "enroll.token-used",
                    "enrollment token \(id) was used already (by machine \(by) at \(Timestamp(nanoseconds: usedAt))): "
                        + "create a new token"
                )
            }
            let expiresAt = Timestamp(nanoseconds: token["expires_at"])
            guard now < expiresAt else {
                throw LifeboatError(
                    "enroll.token-expired",
                    "enrollment token \(id) expired at \(expiresAt): create a new token"
                )
            }
            try enroll(
                db,
                machine: machine,
                serial: certificateSerial,
                certificateExpires: certificateExpires,
                now: now
            )
            try db.execute(
                sql: "UPDATE enrollment_tokens SET used_at = ?, used_by = ? WHERE id = ?",
                arguments: [now.nanoseconds, machine, id]
            )
        }
    }

    /// Creates or re-activates the machine row (inside the redeem transaction).
    private func enroll(
        _ db: Database,
        machine: String,
        serial: String,
        certificateExpires: Timestamp,
        now: Timestamp
    ) throws {
        let existing = try Row.fetchOne(db, sql: "SELECT removed_at FROM machines WHERE name = ?", arguments: [machine])
        if let existing, (existing["removed_at"] as Int64?) == nil {
            throw LifeboatError(
                "enroll.machine-exists",
                "machine \(machine) is enrolled already; remove it first with `lifeboat machines remove \(machine)`"
            )
        }
        if try Bool.fetchOne(db, sql: "SELECT 1 FROM revoked_certificates WHERE serial = ?", arguments: [serial]) != nil
        {
            throw LifeboatError(
                "enroll.bad-certificate",
                "certificate serial \(serial) was revoked and cannot be enrolled"
            )
        }
        if existing != nil {
            try db.execute(
                sql: """
                    UPDATE machines SET certificate_serial = ?, certificate_expires = ?, enrolled_at = ?, removed_at = NULL,
                        connected = 0, address = NULL, agent_version = NULL, last_seen = NULL,
                        state = 'INITIATING', state_reason = NULL, backlog_bytes = 0, synced_bytes = 0, total_bytes = 0,
                        throughput = NULL
                    WHERE name = ?
                    """,
                arguments: [serial, certificateExpires.nanoseconds, now.nanoseconds, machine]
            )
            try db.execute(sql: "DELETE FROM machine_volumes WHERE machine = ?", arguments: [machine])
        } else {
            try db.execute(
                sql:
                    "INSERT INTO machines (name, certificate_serial, certificate_expires, enrolled_at) VALUES (?, ?, ?, ?)",
                arguments: [machine, serial, certificateExpires.nanoseconds, now.nanoseconds]
            )
        }
    }
}
