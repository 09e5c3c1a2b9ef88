import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

@Suite("Bad input and misuse")
struct BadInputTests {
    @Test("opening a directory that is not a store fails with store.not-a-store")
    func notAStore() throws {
        let f = try StoreFixture(create: false)
        try MasterKeyFile.create(f.keyPath)
        // Missing, empty, and holding other files.
        expectError("store.not-a-store") { _ = try f.open(.read) }
        try FileTools.makeDirectory(f.root)
        expectError("store.not-a-store") { _ = try f.open(.read) }
        try FileTools.write(f.root + "/notes.txt", Array("hello".utf8))
        expectError("store.not-a-store") { _ = try f.open(.write) }
        // A config file that is not a store config.
        try FileTools.write(f.root + "/config", Array("this is not a store config at all".utf8))
        let error = expectError("store.not-a-store") { _ = try f.open(.read) }
        #expect(error?.message.contains(f.root) == true)
    }

    @Test("creating a store where one exists, or in a non-empty directory, fails with store.exists")
    func createWhereNotEmpty() throws {
        let f = try StoreFixture()
        expectError("store.exists") { try Store.create(at: f.backend, key: f.key, clock: f.clock) }

        let other = f.path("busy")
        try FileTools.makeDirectory(other)
        try FileTools.write(other + "/file.txt", Array("data".utf8))
        let newKey = f.path("new.key")
        let error = expectError("store.exists") {
            try Store.create(at: LocalDirectoryBackend(root: other), key: .keyFile(path: newKey), clock: f.clock)
        }
        #expect(error?.message.contains(other) == true)
        #expect(try FileTools.list(other) == ["file.txt"], "the directory is left as it was")
        #expect(!FileTools.exists(newKey), "a key file made for the failed create is removed")

        // A path that is a file.
        let file = f.path("plain-file")
        try FileTools.write(file, [1])
        expectError("store.exists") { try Store.create(at: LocalDirectoryBackend(root: file), key: f.key, clock: f.clock) }
    }

    @Test("a second writer, or maintenance next to a reader, fails with store.locked")
    func locks() throws {
        let f = try StoreFixture()
        let writer = try f.open(.write)
        let error = expectError("store.locked") { _ = try f.open(.write) }
        #expect(error?.message.contains(f.root) == true)
        expectError("store.locked") { _ = try f.open(.maintenance) }
        // Readers may read next to a writer.
        let reader = try f.open(.read)
        writer.close()
        // Maintenance excludes readers.
        expectError("store.locked") { _ = try f.open(.maintenance) }
        reader.close()
        let maintenance = try f.open(.maintenance)
        expectError("store.locked") { _ = try f.open(.read) }
        expectError("store.locked") { _ = try f.open(.write) }
        maintenance.close()
        // Closing releases everything.
        try f.open(.write).close()
        try f.open(.maintenance).close()
    }

    @Test("unknown volumes, bad names, read-only stores and concurrent commits are refused")
    func misuse() throws {
        let f = try StoreFixture()
        let path = try f.writeImage("disk.img", TestImage.mixed(size: 1 * MiB, seed: 101))
        let store = try f.open(.write)
        let commit = try store.ingest(machine: "m", volumes: [(name: "root", path: path)])

        let error = expectError("store.unknown-volume") { _ = try store.reader(machine: "m", volume: "data", point: "latest") }
        #expect(error?.message.contains("data") == true)
        #expect(error?.message.contains("root") == true, "the message lists the volumes there are")
        expectError("store.unknown-volume") { _ = try VolumeReader(store: store, commit: commit, volume: "nope") }

        expectError("name.invalid") { _ = try store.beginCommit(machine: "") }
        expectError("name.invalid") { _ = try store.beginCommit(machine: "-flag") }
        expectError("name.invalid") { _ = try store.ingest(machine: "m", volumes: [(name: "a b", path: path)]) }
        expectError("name.invalid") { _ = try store.ingest(machine: "m/../x", volumes: [(name: "v", path: path)]) }
        expectError("io.not-found") { _ = try store.ingest(machine: "m", volumes: [(name: "v", path: f.path("missing.img"))]) }
        expectError("io.not-a-volume") { _ = try store.ingest(machine: "m", volumes: [(name: "v", path: f.dir.path)]) }
        #expect(store.commits() == [commit])

        // One commit at a time.
        let builder = try store.beginCommit(machine: "m")
        expectError("store.commit-in-progress") { _ = try store.beginCommit(machine: "other") }
        expectError("store.commit-in-progress") { _ = try store.ingest(machine: "m", volumes: [(name: "root", path: path)]) }
        builder.abandon()
        expectError("store.commit-finished") { try builder.scan(volume: "root", path: path) }
        builder.abandon()  // harmless twice
        let next = try store.ingest(machine: "m", volumes: [(name: "root", path: path)])
        #expect(next.parent == commit.id)

        // Pruning for real needs maintenance access.
        expectError("store.needs-maintenance") { _ = try store.prune(policy: .default) }
        let dry = try store.prune(policy: .default, dryRun: true)
        #expect(dry.removed.isEmpty)
        expectError("store.unknown-point") { try store.pin(PointID(raw: 12345), holder: "me") }
        store.close()

        // A read-only store writes nothing.
        let ro = try f.open(.read)
        expectError("store.read-only") { _ = try ro.beginCommit(machine: "m") }
        expectError("store.read-only") { _ = try ro.ingest(machine: "m", volumes: [(name: "root", path: path)]) }
        expectError("store.read-only") { try ro.pin(commit.id, holder: "me") }
        expectError("store.read-only") { try ro.unpin(commit.id, holder: "me") }
        #expect(ro.commits().count == 2)
        ro.close()
    }
}
