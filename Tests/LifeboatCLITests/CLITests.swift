import Foundation
import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

/// End-to-end tests of `lifeboat store …`: the real binary, real files, real block devices, real qemu-img.
@Suite(.serialized)
struct CLITests {
    typealias Result = ProcessResult

    /// The `lifeboat` binary next to the test bundle.
    static var binary: String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent().appendingPathComponent("lifeboat").path
    }

    static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) throws -> Result {
        try Processes.run(executable, arguments)
    }

    static func lifeboat(_ arguments: [String]) throws -> Result { try run(binary, arguments) }

    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "lifeboat-cli-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func writeRandomImage(_ path: String, size: Int, seed: UInt64) throws {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        var bytes = [UInt8](repeating: 0, count: size)
        var i = 0
        while i + 8 <= size {
            // Every fourth 64 KiB run stays zero so the image has holes.
            if (i / 65536) % 4 != 3 {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                withUnsafeBytes(of: state) { for j in 0..<8 { bytes[i + j] = $0[j] } }
            }
            i += 8
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// A 16 MiB tmpfs at `dir/small`, to run out of space on purpose. Unmount it when done.
    static func mountSmallTmpfs(in dir: String) throws -> String {
        let mount = "\(dir)/small"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let m = try run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", mount])
        try #require(m.status == 0, "mount failed: \(m.stderr)")
        return mount
    }

    static func same(_ a: String, _ b: String) throws -> Bool {
        try run("/usr/bin/cmp", ["-s", a, b]).status == 0
    }

    @Test func ingestExportRoundTripWithClearOutput() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = ["--store", "\(dir)/store", "--key-file", "\(dir)/key"]
        let initResult = try Self.lifeboat(["store", "init"] + store)
        #expect(initResult.status == 0, "\(initResult.stderr)")
        #expect(initResult.stdout.contains("created key file"))
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(dir)/key")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)

        try Self.writeRandomImage("\(dir)/a.img", size: 6 << 20, seed: 1)
        try Self.writeRandomImage("\(dir)/b.img", size: 3 << 20, seed: 2)
        let ingest = try Self.lifeboat(
            ["store", "ingest"] + store + ["--machine", "db1", "--volume", "root", "--volume", "data", "--json", "\(dir)/a.img", "\(dir)/b.img"]
        )
        #expect(ingest.status == 0, "\(ingest.stderr)")
        #expect(ingest.stdout.contains("\"machine\":\"db1\""))
        for (volume, file) in [("root", "a.img"), ("data", "b.img")] {
            let export = try Self.lifeboat(
                ["store", "export"] + store + ["--machine", "db1", "--volume", volume, "--output", "\(dir)/\(volume).raw"]
            )
            #expect(export.status == 0, "\(export.stderr)")
            #expect(try Self.same("\(dir)/\(volume).raw", "\(dir)/\(file)"))
        }
        // qcow2 export holds the same data (checked by qemu-img itself).
        let qcow = try Self.lifeboat(
            ["store", "export"] + store + ["--machine", "db1", "--volume", "root", "--format", "qcow2", "--output", "\(dir)/root.qcow2"]
        )
        #expect(qcow.status == 0, "\(qcow.stderr)")
        let compare = try Self.run("/usr/bin/qemu-img", ["compare", "-f", "qcow2", "-F", "raw", "\(dir)/root.qcow2", "\(dir)/a.img"])
        #expect(compare.status == 0, "\(compare.stdout) \(compare.stderr)")
        let info = try Self.run("/usr/bin/qemu-img", ["info", "\(dir)/root.qcow2"])
        #expect(info.stdout.contains("file format: qcow2"))

        let points = try Self.lifeboat(["store", "points"] + store)
        #expect(points.status == 0)
        #expect(points.stdout.contains("db1"))
        let verify = try Self.lifeboat(["store", "verify"] + store)
        #expect(verify.status == 0)
        #expect(verify.stdout.contains("no damage found"))
    }

    @Test func badInputGetsOneClearLineAndChangesNothing() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = ["--store", "\(dir)/store", "--key-file", "\(dir)/key"]
        try FileManager.default.createDirectory(atPath: "\(dir)/plain", withIntermediateDirectories: true)
        let notStore = try Self.lifeboat(["store", "points", "--store", "\(dir)/plain", "--key-file", "\(dir)/key"])
        #expect(notStore.status == 1)
        #expect(notStore.stderr.hasPrefix("lifeboat: error:"))
        #expect(notStore.stderr.contains("not a Lifeboat store"))
        #expect(notStore.stderr.split(separator: "\n").count == 1)

        #expect(try Self.lifeboat(["store", "init"] + store).status == 0)
        try Self.writeRandomImage("\(dir)/a.img", size: 2 << 20, seed: 3)
        #expect(try Self.lifeboat(["store", "ingest"] + store + ["--machine", "m", "\(dir)/a.img"]).status == 0)

        // Wrong key.
        _ = try Self.lifeboat(["store", "init", "--store", "\(dir)/other", "--key-file", "\(dir)/otherkey"])
        let wrong = try Self.lifeboat(["store", "points", "--store", "\(dir)/store", "--key-file", "\(dir)/otherkey"])
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("does not open the store"))

        // Unknown point, machine, volume; malformed point.
        for (args, text) in [
            (["--machine", "m", "--volume", "a.img", "--point", "0123456789abcdef"], "does not exist"),
            (["--machine", "nobody", "--volume", "a.img"], "no recovery points"),
            (["--machine", "m", "--volume", "nope"], "no volume 'nope'"),
            (["--machine", "m", "--volume", "a.img", "--point", "yesterday"], "is not a point"),
        ] {
            let r = try Self.lifeboat(["store", "export"] + store + args + ["--output", "\(dir)/x.raw"])
            #expect(r.status == 1)
            #expect(r.stderr.contains(text), "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: "\(dir)/x.raw"))
        }

        // A second writer is refused while the first holds the store.
        let holder = try Store.open(LocalDirectoryBackend(root: "\(dir)/store"), key: .keyFile(path: "\(dir)/key"), access: .write)
        let second = try Self.lifeboat(["store", "ingest"] + store + ["--machine", "m", "\(dir)/a.img"])
        #expect(second.status == 1)
        #expect(second.stderr.contains("locked"))
        holder.close()

        // A shrunken volume is rejected and no commit appears.
        try Self.writeRandomImage("\(dir)/a.img", size: 1 << 20, seed: 3)
        let shrink = try Self.lifeboat(["store", "ingest"] + store + ["--machine", "m", "\(dir)/a.img"])
        #expect(shrink.status == 1)
        #expect(shrink.stderr.contains("shrank"))
        let points = try Self.lifeboat(["store", "points", "--json"] + store)
        #expect(points.stdout.components(separatedBy: "\"point\"").count - 1 == 1)
    }

    @Test func truncatedPackIsReportedWithTheAffectedPoint() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = ["--store", "\(dir)/store", "--key-file", "\(dir)/key"]
        #expect(try Self.lifeboat(["store", "init"] + store).status == 0)
        try Self.writeRandomImage("\(dir)/a.img", size: 4 << 20, seed: 4)
        let ingest = try Self.lifeboat(["store", "ingest", "--json"] + store + ["--machine", "m", "--volume", "v", "\(dir)/a.img"])
        #expect(ingest.status == 0)
        let packs = FileManager.default.enumerator(atPath: "\(dir)/store/packs")!.compactMap { $0 as? String }
            .filter { $0.count > 10 }
        let pack = try #require(packs.first)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(dir)/store/packs/\(pack)"))
        try handle.truncate(atOffset: 1 << 20)
        try handle.close()
        let verify = try Self.lifeboat(["store", "verify"] + store)
        #expect(verify.status == 2)
        #expect(verify.stdout.contains("DAMAGE FOUND"))
        #expect(verify.stdout.contains("machine m volume v point"))
        let export = try Self.lifeboat(["store", "export"] + store + ["--machine", "m", "--volume", "v", "--output", "\(dir)/x.raw"])
        #expect(export.status == 1)
        #expect(export.stderr.contains("machine 'm' volume 'v' point"))
        #expect(export.stderr.contains("offset"))
    }

    /// Ingest from a real block device (a loop device).
    @Test func ingestsABlockDevice() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.writeRandomImage("\(dir)/disk.img", size: 8 << 20, seed: 5)
        let attach = try Self.run("/usr/sbin/losetup", ["--find", "--show", "\(dir)/disk.img"])
        try #require(attach.status == 0, "losetup failed: \(attach.stderr)")
        let device = attach.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Self.run("/usr/sbin/losetup", ["-d", device]) }
        let store = ["--store", "\(dir)/store", "--key-file", "\(dir)/key"]
        #expect(try Self.lifeboat(["store", "init"] + store).status == 0)
        let ingest = try Self.lifeboat(["store", "ingest"] + store + ["--machine", "m", "--volume", "sda", device])
        #expect(ingest.status == 0, "\(ingest.stderr)")
        #expect(try Self.lifeboat(["store", "export"] + store + ["--machine", "m", "--volume", "sda", "--output", "\(dir)/out.raw"]).status == 0)
        #expect(try Self.same("\(dir)/out.raw", "\(dir)/disk.img"))
    }

    /// A full disk during ingest: a clear error, no acknowledged commit lost, ingest works again with space.
    @Test func fullDiskDuringIngest() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mount = try Self.mountSmallTmpfs(in: dir)
        defer { _ = try? Self.run("/usr/bin/umount", [mount]) }
        let store = ["--store", "\(mount)/store", "--key-file", "\(dir)/key"]
        #expect(try Self.lifeboat(["store", "init"] + store).status == 0)
        try Self.writeRandomImage("\(dir)/a.img", size: 12 << 20, seed: 6)
        #expect(try Self.lifeboat(["store", "ingest"] + store + ["--machine", "m", "--volume", "v", "\(dir)/a.img"]).status == 0)
        try Self.writeRandomImage("\(dir)/b.img", size: 12 << 20, seed: 7)
        let full = try Self.lifeboat(["store", "ingest"] + store + ["--machine", "m", "--volume", "v", "\(dir)/b.img"])
        #expect(full.status == 1)
        #expect(full.stderr.contains("no space left"), "\(full.stderr)")
        // The acknowledged commit is intact and the store verifies clean.
        #expect(try Self.lifeboat(["store", "export"] + store + ["--machine", "m", "--volume", "v", "--output", "\(dir)/out.raw"]).status == 0)
        #expect(try Self.same("\(dir)/out.raw", "\(dir)/a.img"))
        let verify = try Self.lifeboat(["store", "verify"] + store)
        #expect(verify.status == 0, "\(verify.stdout)")
        #expect(try Self.lifeboat(["store", "points", "--json"] + store).stdout.components(separatedBy: "\"point\"").count - 1 == 1)
        // With space again (the failed ingest left nothing behind that blocks), ingest continues.
        _ = try Self.run("/usr/bin/mount", ["-o", "remount,size=64m", mount])
        let again = try Self.lifeboat(["store", "ingest"] + store + ["--machine", "m", "--volume", "v", "\(dir)/b.img"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try Self.lifeboat(["store", "export"] + store + ["--machine", "m", "--volume", "v", "--output", "\(dir)/out2.raw"]).status == 0)
        #expect(try Self.same("\(dir)/out2.raw", "\(dir)/b.img"))
    }

    /// Prune through the CLI: dry run changes nothing, a pin protects its point, space comes back.
    @Test func pruneHonoursPinsAndReclaimsSpace() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = ["--store", "\(dir)/store", "--key-file", "\(dir)/key"]
        #expect(try Self.lifeboat(["store", "init"] + store).status == 0)
        var points: [String] = []
        for seed in 10..<14 {
            try Self.writeRandomImage("\(dir)/disk.img", size: 4 << 20, seed: UInt64(seed))
            try FileManager.default.copyItem(atPath: "\(dir)/disk.img", toPath: "\(dir)/state\(seed).img")
            let r = try Self.lifeboat(["store", "ingest", "--json"] + store + ["--machine", "m", "--volume", "v", "\(dir)/disk.img"])
            #expect(r.status == 0, "\(r.stderr)")
            let id = try #require(r.stdout.components(separatedBy: "\"point\":\"").last?.prefix(16))
            points.append(String(id))
        }
        // One rule, one day bucket: the policy keeps the first point of the day and the newest.
        let policy = ["--keep-all-minutes", "0", "--rule", "DAY:1:7"]
        #expect(try Self.lifeboat(["store", "pin"] + store + ["--machine", "m", "--point", points[1], "--holder", "drill-1"]).status == 0)
        let dry = try Self.lifeboat(["store", "prune", "--dry-run"] + store + policy)
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("would remove 1 point(s)"), "\(dry.stdout)")
        let before = try Self.lifeboat(["store", "stats", "--json"] + store).stdout
        let prune = try Self.lifeboat(["store", "prune"] + store + policy)
        #expect(prune.status == 0, "\(prune.stderr)")
        #expect(prune.stdout.contains("removed 1 point(s)"))
        #expect(prune.stdout.contains(points[2]))
        let after = try Self.lifeboat(["store", "stats", "--json"] + store).stdout
        func packBytes(_ json: String) -> Int {
            Int(json.components(separatedBy: "\"pack_bytes\":").last!.prefix { $0.isNumber }) ?? -1
        }
        #expect(packBytes(after) < packBytes(before) - (2 << 20), "\(before) → \(after)")
        for (i, point) in points.enumerated() where i != 2 {
            let e = try Self.lifeboat(["store", "export"] + store + ["--machine", "m", "--volume", "v", "--point", point, "--output", "\(dir)/out.raw"])
            #expect(e.status == 0, "\(e.stderr)")
            #expect(try Self.same("\(dir)/out.raw", "\(dir)/state\(10 + i).img"))
        }
        #expect(try Self.lifeboat(["store", "verify"] + store).status == 0)
        // Unpinned, the pinned point goes at the next prune.
        #expect(try Self.lifeboat(["store", "unpin"] + store + ["--machine", "m", "--point", points[1], "--holder", "drill-1"]).status == 0)
        let second = try Self.lifeboat(["store", "prune"] + store + policy)
        #expect(second.stdout.contains("removed 1 point(s)"), "\(second.stdout)")
        #expect(second.stdout.contains(points[1]))
    }

    /// A long-running writer (the replication server) keeps going after a failed commit: nothing of the
    /// failed commit is deduplicated against, so the next commit of the same data is complete after reopen.
    @Test func sameProcessContinuesAfterFullDisk() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mount = try Self.mountSmallTmpfs(in: dir)
        defer { _ = try? Self.run("/usr/bin/umount", [mount]) }
        let backend = LocalDirectoryBackend(root: "\(mount)/store")
        let key = MasterKeySource.keyFile(path: "\(dir)/key")
        try Store.create(at: backend, key: key)
        try Self.writeRandomImage("\(dir)/a.img", size: 12 << 20, seed: 21)
        try Self.writeRandomImage("\(dir)/b.img", size: 12 << 20, seed: 22)
        let store = try Store.open(backend, key: key, access: .write)
        _ = try store.ingest(machine: "m", volumes: [(name: "v", path: "\(dir)/a.img")])
        #expect(throws: LifeboatError.self) {
            _ = try store.ingest(machine: "m", volumes: [(name: "v", path: "\(dir)/b.img")])
        }
        #expect(store.commits(machine: "m").count == 1)
        _ = try Self.run("/usr/bin/mount", ["-o", "remount,size=64m", mount])
        let second = try store.ingest(machine: "m", volumes: [(name: "v", path: "\(dir)/b.img")])
        store.close()
        let reopened = try Store.open(backend, key: key, access: .read)
        defer { reopened.close() }
        #expect(try reopened.verify().isClean)
        let reader = try reopened.reader(machine: "m", volume: "v", point: second.id.description)
        try reopened.export(reader, to: "\(dir)/out.raw")
        #expect(try Self.same("\(dir)/out.raw", "\(dir)/b.img"))
    }

    /// SIGKILL at random moments during ingest (the long version is `scripts/crash-loop`, 50+ kills).
    @Test func killedIngestLosesNoAcknowledgedCommit() throws {
        let result = try Self.run(
            "/usr/bin/python3",
            ["\(Self.packageRoot)/scripts/crash-loop", "--iterations", "10", "--size-mib", "8", "--binary", Self.binary]
        )
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("crash-loop: 10 passed, 0 failed"), "\(result.stdout)")
    }
}
