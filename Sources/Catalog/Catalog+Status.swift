import GRDB
public import LifeboatCore

// Replication status, written by the replication server as sessions connect, report and commit. Every call
// needs an active machine (`machine.unknown` otherwise, so a session of a machine removed meanwhile learns
// it must end) and stamps `last_seen` with the injected clock.

extension Catalog {
    /// Records that the machine's agent connected from `address`, and replaces its volume list.
    ///
    /// - Throws: `machine.unknown`, `name.invalid` (a volume name), `machine.bad-volume` (duplicate name,
    ///   negative size).
    public func recordConnected(machine: String, address: String, agentVersion: String, volumes: [VolumeRecord]) throws
    {
        try Names.validate(machine, kind: "machine")
        var seen = Set<String>()
        for volume in volumes {
            try Names.validate(volume.name, kind: "volume")
            guard seen.insert(volume.name).inserted else {
                throw LifeboatError("machine.bad-volume", "machine \(machine) announced volume \(volume.name) twice")
            }
            guard volume.size >= 0 else {
                throw LifeboatError(
                    "machine.bad-volume",
                    "machine \(machine) announced volume \(volume.name) with size \(volume.size)"
                )
            }
        }
        try write { db in
            try Catalog.requireActive(db, machine)
            try db.execute(
                sql: "UPDATE machines SET connected = 1, address = ?, agent_version = ?, last_seen = ? WHERE name = ?",
                arguments: [address, agentVersion, self.now.nanoseconds, machine]
            )
            try db.execute(sql: "DELETE FROM machine_volumes WHERE machine = ?", arguments: [machine])
            for volume in volumes {
                try db.execute(
                    sql: "INSERT INTO machine_volumes (machine, name, size) VALUES (?, ?, ?)",
                    arguments: [machine, volume.name, volume.size]
                )
            }
        }
    }

    /// Records that the agent's session ended: state `DISCONNECTED`, not connected, no throughput. The byte
    /// counts, last point and volumes stay as last reported.
    public func recordDisconnected(machine: String, reason: String? = nil) throws {
        try Names.validate(machine, kind: "machine")
        try write { db in
            try Catalog.requireActive(db, machine)
            try db.execute(
                sql: """
                    UPDATE machines SET connected = 0, state = 'DISCONNECTED', state_reason = ?, throughput = NULL, last_seen = ?
                    WHERE name = ?
                    """,
                arguments: [reason, self.now.nanoseconds, machine]
            )
        }
    }

    /// Records the machine's replication state and progress (a negative or non-finite throughput counts as unknown).
    ///
    /// - Throws: `machine.unknown`, `machine.bad-status` for an empty state.
    public func recordStatus(machine: String, _ status: ReplicationStatusUpdate) throws {
        try Names.validate(machine, kind: "machine")
        guard !status.state.isEmpty else {
            throw LifeboatError("machine.bad-status", "the replication state reported for machine \(machine) is empty")
        }
        let throughput = status.throughputBytesPerSecond.flatMap { $0.isFinite && $0 >= 0 ? $0 : nil }
        try write { db in
            try Catalog.requireActive(db, machine)
            try db.execute(
                sql: """
                    UPDATE machines SET state = ?, state_reason = ?, backlog_bytes = ?, synced_bytes = ?, total_bytes = ?,
                        throughput = ?, last_seen = ?
                    WHERE name = ?
                    """,
                arguments: [
                    status.state, status.stateReason, Int64(bitPattern: status.backlogBytes),
                    Int64(bitPattern: status.syncedBytes), Int64(bitPattern: status.totalBytes), throughput,
                    self.now.nanoseconds, machine,
                ]
            )
        }
    }

    /// Records a durable commit: the machine's last point (and last consistent capture time when `consistent`),
    /// and a row in the points index. Recording the same point again replaces its row.
    public func recordCommit(
        machine: String,
        point: UInt64,
        sequence: UInt64,
        captureTime: Timestamp,
        consistent: Bool,
        changedBytes: UInt64
    ) throws {
        try Names.validate(machine, kind: "machine")
        try write { db in
            let now = self.now
            try Catalog.requireActive(db, machine)
            try db.execute(
                sql: """
                    INSERT INTO points (machine, point, sequence, capture_time, committed_at, consistent, changed_bytes)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (machine, point) DO UPDATE SET sequence = excluded.sequence,
                        capture_time = excluded.capture_time, committed_at = excluded.committed_at,
                        consistent = excluded.consistent, changed_bytes = excluded.changed_bytes
                    """,
                arguments: [
                    machine, Int64(bitPattern: point), Int64(bitPattern: sequence), captureTime.nanoseconds,
                    now.nanoseconds, consistent, Int64(bitPattern: changedBytes),
                ]
            )
            try db.execute(
                sql: """
                    UPDATE machines SET last_point = ?, last_sequence = ?, last_point_capture_time = ?,
                        last_consistent_capture_time = CASE WHEN ? THEN ? ELSE last_consistent_capture_time END,
                        last_seen = ?
                    WHERE name = ?
                    """,
                arguments: [
                    Int64(bitPattern: point), Int64(bitPattern: sequence), captureTime.nanoseconds, consistent,
                    captureTime.nanoseconds, now.nanoseconds, machine,
                ]
            )
        }
    }

    /// The machine's most recent commits, newest first (at most `limit`).
    public func points(machine: String, limit: Int) throws -> [PointRecord] {
        try Names.validate(machine, kind: "machine")
        return try read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT point, sequence, capture_time, committed_at, consistent, changed_bytes FROM points
                    WHERE machine = ? ORDER BY capture_time DESC, point DESC LIMIT ?
                    """,
                arguments: [machine, max(0, limit)]
            ).map { row in
                PointRecord(
                    machine: machine,
                    point: UInt64(bitPattern: row["point"]),
                    sequence: UInt64(bitPattern: row["sequence"]),
                    captureTime: Timestamp(nanoseconds: row["capture_time"]),
                    committedAt: Timestamp(nanoseconds: row["committed_at"]),
                    consistent: row["consistent"],
                    changedBytes: UInt64(bitPattern: row["changed_bytes"])
                )
            }
        }
    }

    /// Changes the settings pushed to the machine's agent; nil leaves a setting as it is (defaults: 0 and 250).
    public func setSettings(machine: String, throttleMbps: UInt32?, maxFreezeMilliseconds: UInt32?) throws {
        try Names.validate(machine, kind: "machine")
        try write { db in
            try Catalog.requireActive(db, machine)
            try db.execute(
                sql: """
                    UPDATE machines SET throttle_mbps = COALESCE(?, throttle_mbps), max_freeze_ms = COALESCE(?, max_freeze_ms)
                    WHERE name = ?
                    """,
                arguments: [throttleMbps.map { Int64($0) }, maxFreezeMilliseconds.map { Int64($0) }, machine]
            )
        }
    }

    /// Pauses or resumes replication of a machine: the server tells a connected agent at once (its state becomes
    /// PAUSED), an agent that connects later learns it from WELCOME.
    public func setPaused(machine: String, _ paused: Bool) throws {
        try Names.validate(machine, kind: "machine")
        try write { db in
            try Catalog.requireActive(db, machine)
            try db.execute(sql: "UPDATE machines SET paused = ? WHERE name = ?", arguments: [paused, machine])
        }
    }
}
