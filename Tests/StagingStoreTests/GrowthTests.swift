import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

/// Compares a reader's whole volume with a file, 4 MiB at a time.
func expectReaderMatchesFile(
    _ reader: VolumeReader,
    _ path: String,
    _ what: String,
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) throws {
    let size = try FileTools.size(path)
    #expect(reader.size == size, "\(what): size", sourceLocation: sourceLocation)
    var offset: Int64 = 0
    let step = Int64(4 * MiB)
    while offset < size {
        let count = Int(min(step, size - offset))
        let want = try FileTools.read(path, at: offset, count: count)
        let got = try read(reader, at: offset, count: count)
        if let at = ByteCompare.firstDifference(got, want) {
            Issue.record("\(what): differs at byte \(offset + Int64(at))", sourceLocation: sourceLocation)
            return
        }
        offset += Int64(count)
    }
}

/// Compares two files, 4 MiB at a time.
func expectSameFiles(_ a: String, _ b: String, _ what: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
    let size = try FileTools.size(a)
    #expect(try FileTools.size(b) == size, "\(what): size", sourceLocation: sourceLocation)
    var offset: Int64 = 0
    while offset < size {
        let count = Int(min(Int64(4 * MiB), size - offset))
        if let at = ByteCompare.firstDifference(try FileTools.read(a, at: offset, count: count), try FileTools.read(b, at: offset, count: count)) {
            Issue.record("\(what): differs at byte \(offset + Int64(at))", sourceLocation: sourceLocation)
            return
        }
        offset += Int64(count)
    }
}

@Suite("Volumes that grow or shrink")
struct GrowthTests {
    @Test("a volume grows from 2 MiB past 256 MiB and 16 GiB, and every point reads back right")
    func growAcrossTreeHeights() throws {
        let f = try StoreFixture()
        let small = 2 * MiB
        let original = TestImage.mixed(size: small, seed: 5)
        let path = try f.writeImage("disk.img", original)
        let store = try f.open(.write)
        let c1 = try store.ingest(machine: "grow", volumes: [(name: "disk", path: path)])

        // Grow sparsely with ftruncate to more than one map leaf level (256 MiB), then write at the old end,
        // across the 256 MiB boundary, deep inside and at the new end.
        let big = Int64(300 * MiB + 3 * blockSize + 17)
        try FileTools.truncate(path, to: big)
        var rng = SeededRandom(seed: 51)
        let patches: [(Int64, [UInt8])] = [
            (Int64(small) - 4096, rng.bytes(4096)),  // last block of the old size
            (Int64(small), rng.bytes(65536)),  // right after the old end
            (Int64(256 * MiB) - 100, rng.bytes(300)),  // across the 256 MiB boundary
            (Int64(290 * MiB) + 12345, rng.bytes(20000)),
            (big - 17, rng.bytes(17)),  // the very end, in a partial block
        ]
        for (offset, bytes) in patches { try FileTools.write(path, bytes, at: offset) }
        #expect(try FileTools.allocatedBytes(path) < Int64(16 * MiB), "the test image stays sparse")
        f.clock.advance(seconds: 60)
        let c2 = try store.ingest(machine: "grow", volumes: [(name: "disk", path: path)])
        #expect(c2.volumes.first?.size == big)

        let r2 = try store.reader(machine: "grow", volume: "disk", point: c2.id.description)
        try expectReaderMatchesFile(r2, path, "grown volume")
        for (offset, bytes) in patches {
            expectSameBytes(try read(r2, at: offset, count: bytes.count), bytes, "patch at \(offset)")
        }
        expectSameBytes(try read(r2, at: Int64(100 * MiB), count: 65536), [UInt8](repeating: 0, count: 65536), "hole")

        // Export of the grown volume: equal and sparse.
        let exportPath = f.path("grown.img")
        try store.export(r2, to: exportPath)
        try expectSameFiles(exportPath, path, "exported grown volume")
        #expect(try FileTools.allocatedBytes(exportPath) < Int64(16 * MiB))
        try FileTools.removeFile(exportPath)

        // The old point still has its old size and bytes.
        let r1 = try store.reader(machine: "grow", volume: "disk", point: c1.id.description)
        #expect(r1.size == Int64(small))
        expectSameBytes(try read(r1, at: 0, count: small), original, "point before the growth")

        // Grow past 16 GiB (one more map level) with the extent API, writing near the new end.
        let huge = Int64(17) << 30 + 5
        let builder = try store.beginCommit(machine: "grow")
        #expect(builder.size(of: "disk") == big)
        try builder.setSize(volume: "disk", size: huge)
        #expect(builder.size(of: "disk") == huge)
        let deep = rng.bytes(8192)
        let deepOffset = Int64(16) << 30 - 4096  // across the 16 GiB boundary
        try deep.withUnsafeBytes { try builder.write(volume: "disk", offset: deepOffset, bytes: $0) }
        let tail = rng.bytes(5)
        try tail.withUnsafeBytes { try builder.write(volume: "disk", offset: huge - 5, bytes: $0) }
        f.clock.advance(seconds: 60)
        let c3 = try builder.commit()
        #expect(c3.volumes.first?.size == huge)
        let r3 = try store.reader(machine: "grow", volume: "disk", point: "latest")
        expectSameBytes(try read(r3, at: deepOffset, count: deep.count), deep, "data across 16 GiB")
        expectSameBytes(try read(r3, at: huge - 5, count: 5), tail, "tail of the huge volume")
        expectSameBytes(try read(r3, at: huge - 4096 - 5, count: 4096), [UInt8](repeating: 0, count: 4096), "hole before the tail")
        for (offset, bytes) in patches {
            expectSameBytes(try read(r3, at: offset, count: bytes.count), bytes, "patch at \(offset) after the second growth")
        }
        expectSameBytes(try read(r3, at: 0, count: small - 4096), Array(original[0..<(small - 4096)]), "original data after the second growth")
        #expect(c3.changedBytes == UInt64(3 * blockSize))

        // Growing without writing anything (only the size changes) keeps every byte.
        let grown = try store.beginCommit(machine: "grow")
        let huger = Int64(40) << 30
        try grown.setSize(volume: "disk", size: huger)
        let c4 = try grown.commit()
        #expect(c4.volumes.first?.size == huger)
        #expect(c4.changedBytes == 0)
        let r4 = try store.reader(machine: "grow", volume: "disk", point: "latest")
        expectSameBytes(try read(r4, at: deepOffset, count: deep.count), deep, "data across 16 GiB after a size-only growth")
        expectSameBytes(try read(r4, at: huge - 5, count: 5), tail, "old tail after a size-only growth")
        expectSameBytes(try read(r4, at: huger - 4096, count: 4096), [UInt8](repeating: 0, count: 4096), "new end reads zero")
        expectSameBytes(try read(r4, at: 0, count: 4096), Array(original[0..<4096]), "start after a size-only growth")
        store.close()

        let ro = try f.open(.read)
        #expect(try ro.verify().isClean)
        ro.close()
    }

    @Test("a volume that shrinks is refused with store.volume-shrank and no commit is made")
    func shrinkIsRefused() throws {
        let f = try StoreFixture()
        let aImage = TestImage.mixed(size: 4 * MiB, seed: 52)
        let bImage = TestImage.mixed(size: 8 * MiB, seed: 53)
        let a = try f.writeImage("a.img", aImage)
        let b = try f.writeImage("b.img", bImage)
        let store = try f.open(.write)
        let c1 = try store.ingest(machine: "shrinky", volumes: [(name: "a", path: a), (name: "b", path: b)])

        // New data for a, and b shrunk, in one ingest: nothing of it may become visible.
        let aNew = TestImage.mixed(size: 4 * MiB, seed: 54)
        try FileTools.write(a, aNew)
        try FileTools.truncate(b, to: Int64(6 * MiB))
        f.clock.advance(seconds: 60)
        let error = expectError("store.volume-shrank") {
            _ = try store.ingest(machine: "shrinky", volumes: [(name: "a", path: a), (name: "b", path: b)])
        }
        #expect(error?.message.contains("'b'") == true)
        #expect(error?.message.contains("shrinky") == true)
        #expect(store.commits(machine: "shrinky") == [c1])
        #expect(try store.resolvePoint("latest", machine: "shrinky") == c1)

        // The extent API refuses it too.
        let builder = try store.beginCommit(machine: "shrinky")
        expectError("store.volume-shrank") { try builder.setSize(volume: "b", size: Int64(8 * MiB) - 4096) }
        expectError("store.bad-size") { try builder.setSize(volume: "c", size: -1) }
        builder.abandon()
        #expect(store.commits(machine: "shrinky") == [c1])

        // The store takes the next commit; a's new data (already written once by the failed commit) is
        // stored for real and survives a reopen.
        let c2 = try store.ingest(machine: "shrinky", volumes: [(name: "a", path: a)])
        #expect(c2.parent == c1.id)
        expectSameBytes(try f.exported(store, machine: "shrinky", volume: "a", point: "latest"), aNew, "a after the refused shrink")
        expectSameBytes(try f.exported(store, machine: "shrinky", volume: "b", point: "latest"), bImage, "b keeps its size and bytes")
        store.close()
        let ro = try f.open(.read)
        expectSameBytes(try f.exported(ro, machine: "shrinky", volume: "a", point: "latest"), aNew, "a after reopen")
        expectSameBytes(try f.exported(ro, machine: "shrinky", volume: "a", point: c1.id.description), aImage, "a at the first point")
        #expect(try ro.verify().isClean)
        ro.close()
    }
}
