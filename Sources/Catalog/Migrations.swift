import GRDB
import LifeboatCore

/// The catalog's schema, as named migrations applied in order. A migration, once released, never changes:
/// a later issue appends a new one (`registerMigration("v2-…")`). `Catalog.open` refuses a catalog that has
/// migrations this build does not know (written by a newer Lifeboat).
///
/// Conventions: times are INTEGER nanoseconds since the Unix epoch (UTC); unsigned 64-bit counters (points,
/// sequences, byte counts) are stored as the INTEGER with the same bit pattern; booleans are 0 or 1.
enum Migrations {
    /// The migrator with the system clock (for listing and checking migrations).
    static var migrator: DatabaseMigrator { migrator(clock: SystemWallClock()) }

    /// The migrator; `clock` stamps rows a migration creates (the applications of v4-control-plane).
    static func migrator(clock: any WallClock) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-machines") { db in
            try db.execute(sql: v1)
        }
        // Replication paused by an operator (`lifeboat machines pause`): the agent stays connected, sends nothing.
        migrator.registerMigration("v2-machine-paused") { db in
            try db.execute(sql: "ALTER TABLE machines ADD COLUMN paused INTEGER NOT NULL DEFAULT 0")
        }
        // Launch: per-machine launch settings and DR lifecycle, applications, jobs with their items and event
        // log, recovery instances.
        migrator.registerMigration("v3-launch") { db in
            try db.execute(sql: v3)
        }
        // The control plane: users and their access tokens, applications with recovery objectives, incidents,
        // settings, and the hash-chained audit log. Applications named by machines become application rows.
        migrator.registerMigration("v4-control-plane") { db in
            try db.execute(sql: v4)
            try db.execute(
                sql: """
                    INSERT OR IGNORE INTO applications (name, created_at)
                    SELECT DISTINCT application, ? FROM machines WHERE application IS NOT NULL
                    """,
                arguments: [clock.now().nanoseconds]
            )
        }
        return migrator
    }

    /// The identifiers of every migration, in order.
    static var identifiers: [String] { migrator.migrations }

    private static let v4 = """
        CREATE TABLE users (
            name TEXT PRIMARY KEY NOT NULL,
            password_hash TEXT NOT NULL,            -- PasswordHash: scrypt$N$r$p$<salt base64>$<hash base64>
            roles TEXT NOT NULL,                    -- comma-separated, sorted in Role order
            created_at INTEGER NOT NULL,
            password_changed_at INTEGER NOT NULL,
            disabled_at INTEGER
        );

        CREATE TABLE access_tokens (
            id TEXT PRIMARY KEY NOT NULL,           -- tok-<16 hex>
            user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,                     -- API | SESSION
            secret_hash TEXT NOT NULL UNIQUE,       -- SHA-256 of the secret (hex); the secret itself is never stored
            csrf TEXT,                              -- sessions only
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            revoked_at INTEGER,
            last_used_at INTEGER
        );
        CREATE INDEX access_tokens_by_user ON access_tokens(user, created_at);
        CREATE INDEX access_tokens_by_kind ON access_tokens(kind, expires_at);

        CREATE TABLE applications (
            name TEXT PRIMARY KEY NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            rpo_seconds INTEGER,
            rto_seconds INTEGER,
            launch_settings TEXT,                   -- JSON (LaunchSettings); NULL = none
            created_at INTEGER NOT NULL
        );
        CREATE INDEX machines_by_application ON machines(application);

        CREATE TABLE incidents (
            id TEXT PRIMARY KEY NOT NULL,           -- inc-<16 hex>
            title TEXT NOT NULL,
            severity TEXT NOT NULL,                 -- LOW | MEDIUM | HIGH | CRITICAL
            applications TEXT NOT NULL,             -- JSON array of application names
            status TEXT NOT NULL,                   -- OPEN | CLOSED
            declared_by TEXT NOT NULL,
            declared_at INTEGER NOT NULL,
            closed_by TEXT,
            closed_at INTEGER,
            summary TEXT
        );
        CREATE INDEX incidents_by_status ON incidents(status, declared_at);

        CREATE TABLE incident_notes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            incident TEXT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
            time INTEGER NOT NULL,
            author TEXT NOT NULL,
            kind TEXT NOT NULL,                     -- NOTE | REPORT
            text TEXT NOT NULL
        );
        CREATE INDEX incident_notes_by_incident ON incident_notes(incident, id);

        ALTER TABLE jobs ADD COLUMN incident TEXT;  -- the incident a launch was made under
        ALTER TABLE jobs ADD COLUMN requested_by TEXT;
        CREATE INDEX jobs_by_incident ON jobs(incident, created_at);

        CREATE TABLE settings (
            key TEXT PRIMARY KEY NOT NULL,
            value TEXT NOT NULL                     -- JSON
        );

        -- Append-only, hash-chained (see AuditChain): seq runs 1, 2, 3… without gaps.
        CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            source TEXT NOT NULL,
            result TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX audit_log_by_actor ON audit_log(actor, seq);
        CREATE INDEX audit_log_by_action ON audit_log(action, seq);

        -- The newest entry, kept apart from the log so that deleting the newest entries shows.
        CREATE TABLE audit_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL
        );
        INSERT INTO audit_head (id, seq, hash)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
        """

    private static let v3 = """
        ALTER TABLE machines ADD COLUMN application TEXT;
        ALTER TABLE machines ADD COLUMN launch_settings TEXT;          -- JSON (LaunchSettings); NULL = defaults
        ALTER TABLE machines ADD COLUMN dr_lifecycle TEXT NOT NULL DEFAULT 'NOT_TESTED';
        ALTER TABLE machines ADD COLUMN last_drill_at INTEGER;
        ALTER TABLE machines ADD COLUMN last_drill_passed_at INTEGER;

        CREATE TABLE jobs (
            id TEXT PRIMARY KEY NOT NULL,           -- job-<16 hex>
            type TEXT NOT NULL,                     -- LAUNCH | TERMINATE
            initiated_by TEXT NOT NULL,             -- START_DRILL | START_RECOVERY | TERMINATE_RECOVERY_INSTANCES
            mode TEXT,                              -- TEST | RECOVERY (LAUNCH jobs)
            status TEXT NOT NULL,                   -- PENDING | STARTED | COMPLETED
            created_at INTEGER NOT NULL,
            started_at INTEGER,
            ended_at INTEGER
        );
        CREATE INDEX jobs_by_status ON jobs(status, created_at);

        -- One row per machine of a job: the instance it launches or terminates and its outcome.
        CREATE TABLE job_items (
            job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            instance TEXT NOT NULL,
            machine TEXT NOT NULL,
            position INTEGER NOT NULL,
            point INTEGER,
            point_capture_time INTEGER,
            launch_status TEXT NOT NULL DEFAULT 'PENDING',
            rto_ns INTEGER,                         -- job creation to acceptance checks passed
            error TEXT,
            PRIMARY KEY (job, instance)
        );

        CREATE TABLE job_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            time INTEGER NOT NULL,
            kind TEXT NOT NULL,
            machine TEXT,
            instance TEXT,
            detail TEXT NOT NULL,
            error TEXT
        );
        CREATE INDEX job_events_by_job ON job_events(job, id);

        CREATE TABLE recovery_instances (
            id TEXT PRIMARY KEY NOT NULL,           -- ri-<16 hex>
            machine TEXT NOT NULL,
            job TEXT NOT NULL,
            mode TEXT NOT NULL,
            point INTEGER NOT NULL,
            point_capture_time INTEGER NOT NULL,
            state TEXT NOT NULL,                    -- InstanceState
            state_reason TEXT,
            launcher TEXT NOT NULL,
            runtime TEXT,                           -- JSON the launcher needs to reach and stop the machine
            created_at INTEGER NOT NULL,
            launched_at INTEGER,
            terminated_at INTEGER
        );
        CREATE INDEX recovery_instances_by_state ON recovery_instances(state);
        """

    private static let v1 = """
        CREATE TABLE enrollment_tokens (
            id TEXT PRIMARY KEY NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,      -- SHA-256 of the secret (hex); the secret itself is never stored
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            used_at INTEGER,
            used_by TEXT,
            note TEXT
        );

        CREATE TABLE machines (
            name TEXT PRIMARY KEY NOT NULL,
            certificate_serial TEXT NOT NULL,
            certificate_expires INTEGER NOT NULL,
            enrolled_at INTEGER NOT NULL,
            removed_at INTEGER,
            connected INTEGER NOT NULL DEFAULT 0,
            address TEXT,
            agent_version TEXT,
            last_seen INTEGER,
            state TEXT NOT NULL DEFAULT 'INITIATING',
            state_reason TEXT,
            backlog_bytes INTEGER NOT NULL DEFAULT 0,
            synced_bytes INTEGER NOT NULL DEFAULT 0,
            total_bytes INTEGER NOT NULL DEFAULT 0,
            throughput REAL,                        -- bytes per second
            last_point INTEGER,
            last_sequence INTEGER,
            last_point_capture_time INTEGER,
            last_consistent_capture_time INTEGER,
            throttle_mbps INTEGER NOT NULL DEFAULT 0,
            max_freeze_ms INTEGER NOT NULL DEFAULT 250
        );

        CREATE TABLE machine_volumes (
            machine TEXT NOT NULL REFERENCES machines(name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (machine, name)
        );

        CREATE TABLE revoked_certificates (
            serial TEXT PRIMARY KEY NOT NULL,
            machine TEXT NOT NULL,
            revoked_at INTEGER NOT NULL
        );

        CREATE TABLE points (
            machine TEXT NOT NULL,
            point INTEGER NOT NULL,
            sequence INTEGER NOT NULL,
            capture_time INTEGER NOT NULL,
            committed_at INTEGER NOT NULL,
            consistent INTEGER NOT NULL,
            changed_bytes INTEGER NOT NULL,
            PRIMARY KEY (machine, point)
        );
        CREATE INDEX points_by_capture_time ON points(machine, capture_time);

        CREATE TABLE machine_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time INTEGER NOT NULL,
            machine TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE INDEX machine_events_by_machine ON machine_events(machine, id);
        """
}
