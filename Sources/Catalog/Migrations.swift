import GRDB

/// The catalog's schema, as named migrations applied in order. A migration, once released, never changes:
/// a later issue appends a new one (`registerMigration("v2-…")`). `Catalog.open` refuses a catalog that has
/// migrations this build does not know (written by a newer Lifeboat).
///
/// Conventions: times are INTEGER nanoseconds since the Unix epoch (UTC); unsigned 64-bit counters (points,
/// sequences, byte counts) are stored as the INTEGER with the same bit pattern; booleans are 0 or 1.
enum Migrations {
    static var migrator: DatabaseMigrator {
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
        return migrator
    }

    /// The identifiers of every migration, in order.
    static var identifiers: [String] { migrator.migrations }

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
