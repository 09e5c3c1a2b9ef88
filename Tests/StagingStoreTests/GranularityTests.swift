import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

@Suite("Change granularity: 4 KiB blocks")
struct GranularityTests {
    @Test("random 4 KiB writes cost about 4 KiB each, and changedBytes counts the changed blocks")
    func smallWritesStoreSmallChanges() throws {
        let f = try StoreFixture()
        let size = 16 * MiB
        let original = TestImage.mixed(size: size, seed: 2)
        let path = try f.writeImage("disk.img", original)
        let store = try f.open(.write)
        let first = try store.ingest(machine: "db-7", volumes: [(name: "data", path: path)])
        let before = try f.files.totalBytes()

        // N random 4 KiB writes of random data (some may hit the same block twice).
        let n = 200
        var rng = SeededRandom(seed: 22)
        var modified = original
        for _ in 0..<n {
            let block = rng.below(size / blockSize)
            modified.replaceSubrange((block * blockSize)..<((block + 1) * blockSize), with: rng.bytes(blockSize))
        }
        try FileTools.write(path, modified)
        f.clock.advance(seconds: 60)
        let second = try store.ingest(machine: "db-7", volumes: [(name: "data", path: path)])
        let after = try f.files.totalBytes()

        let distinct = changedBlocks(original, modified)
        #expect(distinct > n * 9 / 10 && distinct <= n)
        #expect(second.changedBytes == UInt64(distinct * blockSize))
        #expect(second.parent == first.id)
        let growth = after - before
        #expect(growth <= Int64(4 * n * blockSize), "store grew by \(growth) bytes for \(n) 4 KiB writes")
        #expect(growth >= Int64(distinct * blockSize), "random data cannot be stored in less than its size")
        #expect(second.storedBytes > 0 && Int64(second.storedBytes) <= growth)

        // Both states read back exactly.
        expectSameBytes(try f.exported(store, machine: "db-7", volume: "data", point: second.id.description), modified, "second state")
        expectSameBytes(try f.exported(store, machine: "db-7", volume: "data", point: first.id.description), original, "first state")

        // An unchanged re-ingest stores (almost) nothing and changes nothing.
        f.clock.advance(seconds: 60)
        let third = try store.ingest(machine: "db-7", volumes: [(name: "data", path: path)])
        let afterSame = try f.files.totalBytes()
        #expect(third.changedBytes == 0)
        #expect(third.storedBytes == 0)
        #expect(afterSame - after < Int64(64 * KiB), "an unchanged ingest grew the store by \(afterSame - after) bytes")
        #expect(third.volumes == second.volumes, "an unchanged volume keeps its map")
        store.close()
    }

    @Test("rewriting a whole image with fresh random data is stored once, not per block")
    func wholeRewrite() throws {
        let f = try StoreFixture()
        let size = 8 * MiB
        var rng = SeededRandom(seed: 23)
        let a = rng.bytes(size)
        let path = try f.writeImage("disk.img", a)
        let store = try f.open(.write)
        _ = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])
        let before = try f.files.totalBytes()
        let b = rng.bytes(size)
        try FileTools.write(path, b)
        let second = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])
        let growth = try f.files.totalBytes() - before
        #expect(second.changedBytes == UInt64(size))
        // Random data: size plus small overhead (nonces, tags, map, index).
        #expect(growth >= Int64(size) && growth < Int64(size) + Int64(size / 20))
        expectSameBytes(try f.exported(store, machine: "m", volume: "v", point: "latest"), b, "rewritten image")
        store.close()
    }

    @Test("identical content in another volume or machine is deduplicated")
    func deduplication() throws {
        let f = try StoreFixture()
        var rng = SeededRandom(seed: 24)
        let image = rng.bytes(4 * MiB)
        let path = try f.writeImage("disk.img", image)
        let store = try f.open(.write)
        _ = try store.ingest(machine: "m1", volumes: [(name: "v", path: path)])
        let before = try f.files.totalBytes()
        let copy = try store.ingest(machine: "m2", volumes: [(name: "other", path: path)])
        let growth = try f.files.totalBytes() - before
        #expect(growth < Int64(64 * KiB), "a second copy of the same 4 MiB grew the store by \(growth) bytes")
        #expect(copy.changedBytes == UInt64(image.count))
        expectSameBytes(try f.exported(store, machine: "m2", volume: "other", point: "latest"), image, "deduplicated copy")
        store.close()
    }
}
