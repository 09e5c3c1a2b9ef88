import GRDB
public import LifeboatCore
import Synchronization

/// The replication server's persistent state: machines, enrollment tokens, revoked certificates, replication
/// status, recovery-point index and machine events, in one SQLite file (WAL mode) through GRDB.
///
/// Every method is synchronous and safe to call from any thread; writes are serialized and each is one
/// transaction, so a failed call changes nothing. Several processes (the server and the command line) may
/// open the same file: a writer waits up to 10 s for another process's transaction. Errors are
/// `LifeboatError`s with `catalog.*`, `enroll.*`, `machine.*` or `name.invalid` codes.
public final class Catalog: Sendable {
    /// The catalog file.
    public let path: String
    let pool: DatabasePool
    let clock: any WallClock
    private let closed = Atomic<Bool>(false)

    private init(path: String, pool: DatabasePool, clock: any WallClock) {
        self.path = path
        self.pool = pool
        self.clock = clock
    }

    /// Opens the catalog at `path`, creating it (mode 0600) if missing, and brings its schema up to date.
    ///
    /// - Throws: `catalog.open` when the directory is missing, the file is unreadable, is not an SQLite
    ///   database or is damaged (the file is then left untouched), is another application's database, or was
    ///   written by a newer Lifeboat.
    public static func open(path: String, clock: any WallClock = SystemWallClock()) throws -> Catalog {
        try CatalogFile.prepare(path: path)
        var configuration = Configuration()
        configuration.label = "lifeboat.catalog"
        configuration.busyMode = .timeout(10)
        configuration.foreignKeysEnabled = true
        configuration.prepareDatabase { db in
            // An acknowledged commit is recorded durably (DESIGN §5.1): sync the WAL on every commit.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw openError(error, path: path)
        }
        do {
            let migrator = Migrations.migrator(clock: clock)
            try pool.read { db in try checkOwnership(db, migrator: migrator, path: path) }
            try migrator.migrate(pool)
        } catch {
            try? pool.close()
            throw openError(error, path: path)
        }
        return Catalog(path: path, pool: pool, clock: clock)
    }

    /// Closes the database, first folding the WAL into the main file so that the file alone is a complete
    /// copy; later calls throw `catalog.closed`. Closing twice does nothing.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // Best effort: another process may be reading; SQLite then checkpoints on a later close or open.
        _ = try? pool.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
        try? pool.close()
    }

    /// Refuses a database that belongs to another application or to a newer Lifeboat.
    private static func checkOwnership(_ db: Database, migrator: DatabaseMigrator, path: String) throws {
        if try migrator.hasBeenSuperseded(db) {
            throw LifeboatError(
                "catalog.open",
                "the catalog \(path) was written by a newer version of lifeboat: run that version (or newer)"
            )
        }
        if try !db.tableExists("grdb_migrations") {
            let tables =
                try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'") ?? 0
            if tables > 0 {
                throw LifeboatError(
                    "catalog.open",
                    "\(path) is an SQLite database of another application, not a Lifeboat catalog: choose another path"
                )
            }
        }
    }

    private static func openError(_ error: any Error, path: String) -> LifeboatError {
        if let error = error as? LifeboatError { return error }
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_NOTADB, .SQLITE_CORRUPT:
                return CatalogFile.notADatabase(path, cause: error)
            case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_AUTH:
                return LifeboatError(
                    "catalog.open",
                    "cannot open the catalog \(path): check that it and its directory are readable and writable by this user",
                    cause: error
                )
            case .SQLITE_READONLY:
                return LifeboatError(
                    "catalog.open",
                    "the catalog \(path) is read-only: make it and its directory writable by this user",
                    cause: error
                )
            case .SQLITE_FULL:
                return LifeboatError(
                    "catalog.open",
                    "no space left to open the catalog \(path): free space",
                    cause: error
                )
            case .SQLITE_BUSY, .SQLITE_LOCKED:
                return LifeboatError(
                    "catalog.open",
                    "the catalog \(path) stayed locked by another process: try again when it finishes",
                    cause: error
                )
            default:
                break
            }
        }
        return LifeboatError("catalog.open", "opening the catalog \(path) failed", cause: error)
    }

    // MARK: - Access

    /// Runs `body` in one write transaction (IMMEDIATE), mapping database errors to `LifeboatError`s.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try checkOpen()
        do {
            return try pool.write(body)
        } catch {
            throw databaseError(error)
        }
    }

    /// Runs `body` on a consistent snapshot.
    func read<T>(_ body: (Database) throws -> T) throws -> T {
        try checkOpen()
        do {
            return try pool.read(body)
        } catch {
            throw databaseError(error)
        }
    }

    private func checkOpen() throws {
        if closed.load(ordering: .acquiring) {
            throw LifeboatError("catalog.closed", "the catalog \(path) is closed")
        }
    }

    private func databaseError(_ error: any Error) -> LifeboatError {
        if let error = error as? LifeboatError { return error }
        guard let error = error as? DatabaseError else {
            return LifeboatError("catalog.failed", "the catalog \(path) failed: \(error)", cause: error)
        }
        switch error.resultCode {
        case .SQLITE_FULL:
            return LifeboatError(
                "catalog.no-space",
                "no space left for the catalog \(path): free space on its filesystem",
                cause: error
            )
        case .SQLITE_CORRUPT, .SQLITE_NOTADB:
            return LifeboatError(
                "catalog.corrupt",
                "the catalog \(path) is damaged: stop lifeboat and restore the catalog from a backup",
                cause: error
            )
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return LifeboatError(
                "catalog.busy",
                "the catalog \(path) stayed locked by another process for more than 10 s: try again",
                cause: error
            )
        case .SQLITE_READONLY:
            return LifeboatError(
                "catalog.read-only",
                "the catalog \(path) is read-only: make it writable",
                cause: error
            )
        default:
            return LifeboatError(
                "catalog.failed",
                "the catalog \(path) failed: \(error.message ?? "\(error)")",
                cause: error
            )
        }
    }

    /// The current time from the injected clock.
    var now: Timestamp { clock.now() }

    /// The identifiers of the migrations applied to this catalog, in order (for tests and diagnostics).
    func appliedMigrations() throws -> [String] {
        try read { db in try Migrations.migrator.appliedMigrations(db) }
    }

    /// Runs raw SQL in one write transaction: for tests that build damaged or foreign catalogs.
    func execute(sql: String) throws {
        try write { db in try db.execute(sql: sql) }
    }
}
