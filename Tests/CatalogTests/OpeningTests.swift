import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Opening the catalog")
struct OpeningTests {
    @Test("a fresh file gets every migration once; reopening keeps the data and migrates nothing again")
    func migrationsAndReopen() throws {
        let f = try CatalogFixture()
        #expect(try f.catalog.appliedMigrations() == Migrations.identifiers)
        #expect(try f.catalog.machines().isEmpty)
        try f.enroll("web-1", serial: "0a01")
        try f.catalog.setSettings(machine: "web-1", throttleMbps: 100, maxFreezeMilliseconds: nil)

        try f.reopen()
        #expect(try f.catalog.appliedMigrations() == Migrations.identifiers)
        let machine = try #require(try f.catalog.machine(named: "web-1"))
        #expect(machine.certificateSerial == "0a01")
        #expect(machine.throttleMbps == 100)
        #expect(machine.maxFreezeMilliseconds == 250)
        #expect(try f.catalog.enrollmentTokens().count == 1)
    }

    @Test("the database file and its WAL are created with mode 0600")
    func fileMode() throws {
        let f = try CatalogFixture()
        try f.enroll("web-1", serial: "0a01")
        #expect(try FileTools.mode(f.path) == 0o600)
        for suffix in ["-wal", "-shm"] where FileTools.exists(f.path + suffix) {
            #expect(try FileTools.mode(f.path + suffix) == 0o600, "\(suffix) file")
        }
    }

    @Test("garbage bytes: catalog.open with a clear message, and the file is left untouched")
    func garbage() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-catalog")
        let path = dir.child("catalog.sqlite")
        var random = SeededRandom(seed: 7)
        let bytes = random.bytes(64 << 10)
        try FileTools.write(path, bytes, mode: 0o600)

        let error = expectError("catalog.open") { _ = try Catalog.open(path: path) }
        #expect(error?.message.contains(path) == true)
        #expect(error?.message.contains("not a readable Lifeboat catalog") == true)
        #expect(error?.message.contains("restore it from a backup") == true)
        #expect(try FileTools.read(path) == bytes)
        #expect(try FileTools.list(dir.path) == ["catalog.sqlite"], "no journal or WAL files are made")
    }

    @Test("an SQLite header followed by garbage, or a truncated catalog: catalog.open, the file untouched")
    func damagedDatabase() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-catalog")
        let headerOnly = dir.child("header.sqlite")
        var random = SeededRandom(seed: 8)
        let bytes = CatalogFile.sqliteHeader + random.bytes(8192 - 16)
        try FileTools.write(headerOnly, bytes, mode: 0o600)
        let error = expectError("catalog.open") { _ = try Catalog.open(path: headerOnly) }
        #expect(error?.message.contains("not a readable Lifeboat catalog") == true)
        #expect(try FileTools.read(headerOnly) == bytes)

        // A real catalog cut after its first page: the schema points at pages that are gone.
        let truncated = dir.child("truncated.sqlite")
        let catalog = try Catalog.open(path: truncated)
        _ = try catalog.createEnrollmentToken(validFor: 60)
        catalog.close()
        #expect(
            try !FileTools.exists(truncated + "-wal") || FileTools.size(truncated + "-wal") == 0,
            "closing checkpoints"
        )
        try FileTools.truncate(truncated, to: 4096)
        let before = try FileTools.read(truncated)
        let damaged = expectError("catalog.open") { _ = try Catalog.open(path: truncated) }
        #expect(damaged?.message.contains("not a readable Lifeboat catalog") == true)
        #expect(try FileTools.read(truncated) == before)
    }

    @Test("a directory, a missing directory, an empty path: catalog.open naming the problem")
    func badPaths() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-catalog")
        let isDirectory = expectError("catalog.open") { _ = try Catalog.open(path: dir.path) }
        #expect(isDirectory?.message.contains("is a directory") == true)

        let missing = dir.child("nope/catalog.sqlite")
        let noDirectory = expectError("catalog.open") { _ = try Catalog.open(path: missing) }
        #expect(noDirectory?.message.contains("\(dir.path)/nope does not exist") == true)
        #expect(!FileTools.exists(dir.child("nope")))

        expectError("catalog.open") { _ = try Catalog.open(path: "") }
    }

    @Test("another application's SQLite database, or a catalog from a newer Lifeboat, is refused unchanged")
    func foreignAndNewer() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-catalog")
        let foreign = dir.child("foreign.sqlite")
        let catalog = try Catalog.open(path: foreign)
        try catalog.execute(sql: "DROP TABLE grdb_migrations")
        catalog.close()
        let before = try FileTools.read(foreign)
        let error = expectError("catalog.open") { _ = try Catalog.open(path: foreign) }
        #expect(error?.message.contains("another application") == true)
        #expect(try FileTools.read(foreign) == before)

        let newer = dir.child("newer.sqlite")
        let current = try Catalog.open(path: newer)
        try current.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        current.close()
        let newerError = expectError("catalog.open") { _ = try Catalog.open(path: newer) }
        #expect(newerError?.message.contains("newer version of lifeboat") == true)
    }

    @Test("an empty existing file becomes a catalog")
    func emptyFile() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-catalog")
        let path = dir.child("catalog.sqlite")
        try FileTools.write(path, [], mode: 0o600)
        let catalog = try Catalog.open(path: path)
        defer { catalog.close() }
        #expect(try catalog.appliedMigrations() == Migrations.identifiers)
    }

    @Test("after close every call fails with catalog.closed; closing twice is harmless")
    func closed() throws {
        let f = try CatalogFixture()
        f.catalog.close()
        f.catalog.close()
        expectError("catalog.closed") { _ = try f.catalog.machines() }
        expectError("catalog.closed") { _ = try f.catalog.createEnrollmentToken(validFor: 60) }
    }
}
