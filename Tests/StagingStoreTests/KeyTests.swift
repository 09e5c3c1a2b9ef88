import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

@Suite("Keys and encryption")
struct KeyTests {
    @Test("the key file is created with mode 0600 and a readable-by-others key file is refused")
    func keyFilePermissions() throws {
        let f = try StoreFixture(create: false)
        #expect(!FileTools.exists(f.keyPath))
        let summary = try Store.create(at: f.backend, key: f.key, clock: f.clock)
        #expect(summary.createdKeyFile == f.keyPath)
        #expect(summary.location == f.root)
        #expect(try FileTools.mode(f.keyPath) == 0o600)
        #expect(try FileTools.mode(f.root + "/config") == 0o600)
        try f.open(.read).close()

        try FileTools.chmod(f.keyPath, 0o644)
        let error = expectError("key.permissions") { _ = try f.open(.read) }
        #expect(error?.message.contains(f.keyPath) == true)
        try FileTools.chmod(f.keyPath, 0o640)
        expectError("key.permissions") { _ = try f.open(.write) }
        try FileTools.chmod(f.keyPath, 0o600)
        try f.open(.read).close()

        // A key file that is missing or not a key file.
        expectError("key.missing") { _ = try Store.open(f.backend, key: .keyFile(path: f.path("absent.key"))) }
        let junk = f.path("junk.key")
        try FileTools.write(junk, Array("not a key\n".utf8), mode: 0o600)
        expectError("key.invalid") { _ = try Store.open(f.backend, key: .keyFile(path: junk)) }
        // A second create with an existing key file uses it and does not replace it.
        let keyBytes = try FileTools.read(f.keyPath)
        let summary2 = try Store.create(at: LocalDirectoryBackend(root: f.path("second-store")), key: f.key, clock: f.clock)
        #expect(summary2.createdKeyFile == nil)
        #expect(try FileTools.read(f.keyPath) == keyBytes)
        #expect(summary2.id != summary.id)
    }

    @Test("a create that fails on its key leaves the directory reusable")
    func failedCreateLeavesNothing() throws {
        let f = try StoreFixture(create: false)
        try MasterKeyFile.create(f.keyPath)
        try FileTools.chmod(f.keyPath, 0o644)
        expectError("key.permissions") { try Store.create(at: f.backend, key: f.key, clock: f.clock) }
        #expect(!FileTools.exists(f.root + "/config"))
        try FileTools.chmod(f.keyPath, 0o600)
        // The same command again, now that the key file is right, must work.
        try Store.create(at: f.backend, key: f.key, clock: f.clock)
        try f.open(.read).close()
    }

    @Test("a wrong key file fails with store.wrong-key before anything else is read or locked")
    func wrongKeyFile() throws {
        let f = try StoreFixture()
        let path = try f.writeImage("disk.img", TestImage.mixed(size: 1 * MiB, seed: 81))
        let store = try f.open(.write)
        _ = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])

        let otherKey = f.path("other.key")
        try MasterKeyFile.create(otherKey)
        #expect(try FileTools.mode(otherKey) == 0o600)
        expectError("key.exists") { try MasterKeyFile.create(otherKey) }

        // While a writer holds the lock, the wrong key is still reported as the wrong key, not as a lock.
        let error = expectError("store.wrong-key") { _ = try Store.open(f.backend, key: .keyFile(path: otherKey), access: .write) }
        #expect(error?.message.contains(otherKey) == true)
        expectError("store.locked") { _ = try f.open(.write) }
        store.close()

        // With the store's metadata unreadable, the right key fails on it, the wrong key never gets there.
        try FileTools.removeTree(f.root + "/index")
        try FileTools.write(f.root + "/index", [1, 2, 3])
        expectError("store.wrong-key") { _ = try Store.open(f.backend, key: .keyFile(path: otherKey), access: .read) }
        #expect(throws: (any Error).self) { _ = try f.open(.read) }
        // A passphrase does not open a key-file store.
        expectError("store.wrong-key") { _ = try Store.open(f.backend, key: .passphrase("anything")) }
    }

    @Test("a passphrase store opens with its passphrase only")
    func passphrase() throws {
        let f = try StoreFixture(create: false)
        let key = MasterKeySource.passphrase("correct horse battery staple")
        let summary = try Store.create(at: f.backend, key: key, clock: f.clock)
        #expect(summary.createdKeyFile == nil)
        #expect(!FileTools.exists(f.keyPath))

        let path = try f.writeImage("disk.img", TestImage.mixed(size: 1 * MiB, seed: 82))
        let store = try Store.open(f.backend, key: key, access: .write, clock: f.clock)
        _ = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])
        store.close()

        let ro = try Store.open(f.backend, key: key, access: .read, clock: f.clock)
        expectSameBytes(try f.exported(ro, machine: "m", volume: "v", point: "latest"), try FileTools.read(path), "export")
        ro.close()
        let error = expectError("store.wrong-key") {
            _ = try Store.open(f.backend, key: .passphrase("correct horse battery stapler"))
        }
        #expect(error?.message.contains("passphrase") == true)
        expectError("store.wrong-key") { _ = try Store.open(f.backend, key: .passphrase("")) }
        try MasterKeyFile.create(f.keyPath)
        expectError("store.wrong-key") { _ = try Store.open(f.backend, key: f.key) }
    }

    @Test("known plaintext, machine and volume names appear nowhere in the store's files")
    func noPlaintextOnDisk() throws {
        let f = try StoreFixture()
        // A distinctive 4 KiB pattern repeated over most of the image, plus incompressible data.
        let pattern = Array(String(repeating: "LIFEBOAT-KNOWN-PLAINTEXT-4K-PATTERN:", count: 114).utf8.prefix(4096))
        try #require(pattern.count == 4096)
        var image = TestImage.repeating(pattern, size: 6 * MiB)
        var rng = SeededRandom(seed: 83)
        let random = rng.bytes(2 * 65536)
        image.replaceSubrange((3 * MiB)..<(3 * MiB + random.count), with: random)
        var text = ArraySlice([UInt8](repeating: 0, count: 65536))
        TestImage.fillText(&text, rng: &rng)
        image.replaceSubrange((5 * MiB)..<(5 * MiB + 65536), with: text)
        let machine = "secret-machine-zebra"
        let volume = "volume-quokka"
        let holder = "holder-platypus"
        let path = try f.writeImage("disk.img", image)

        let store = try f.open(.write)
        let commit = try store.ingest(machine: machine, volumes: [(name: volume, path: path)])
        try store.pin(commit.id, holder: holder)
        store.close()

        let needles: [(String, [UInt8])] = [
            ("pattern start", Array(pattern[0..<16])),
            ("pattern middle", Array(pattern[2000..<2016])),
            ("random data", Array(random[1000..<1032])),
            ("random data end", Array(random[(random.count - 32)...])),
            ("text data", Array(text[4000..<4024])),
            ("machine name", Array(machine.utf8)),
            ("volume name", Array(volume.utf8)),
            ("pin holder", Array(holder.utf8)),
        ]
        let files = try FileTools.allFiles(under: f.root)
        #expect(files.count >= 5)
        var sawPackHeader = false
        for file in files {
            for (what, needle) in needles {
                #expect(try !FileTools.contains(file, needle), "\(what) found in \(file)")
            }
            if try FileTools.contains(file, Array("LBPACK01".utf8)) { sawPackHeader = true }
        }
        // The search does find what is there in the clear (the pack header), so it is not vacuous.
        #expect(sawPackHeader)
        // And the store gives everything back.
        let ro = try f.open(.read)
        expectSameBytes(try f.exported(ro, machine: machine, volume: volume, point: "latest"), image, "export")
        ro.close()
    }
}
