import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing
import Dispatch

@Suite("Round trip: ingest, export, read")
struct RoundTripTests {
    @Test("a mixed image with an odd size exports byte-exact and reads back at any range")
    func mixedImageRoundTrip() throws {
        let f = try StoreFixture()
        let size = 10 * MiB + 1234
        let image = TestImage.mixed(size: size, seed: 1)
        let imagePath = try f.writeImage("disk.img", image)

        let store = try f.open(.write)
        let commit = try store.ingest(machine: "web-1", volumes: [(name: "root", path: imagePath)])
        #expect(commit.machine == "web-1")
        #expect(commit.sequence == 1)
        #expect(commit.parent == nil)
        #expect(commit.volumes.map(\.name) == ["root"])
        #expect(commit.volumes.first?.size == Int64(size))
        // Against an empty parent, every non-zero block is a change.
        #expect(commit.changedBytes == UInt64(nonZeroBlocks(image) * blockSize))
        #expect(commit.storedBytes > 0)

        // Export: byte-exact, sparse where the image is zero.
        let exportPath = f.path("export.img")
        let reader = try store.reader(machine: "web-1", volume: "root", point: "latest")
        #expect(reader.size == Int64(size))
        let written = try store.export(reader, to: exportPath)
        let exported = try FileTools.read(exportPath)
        expectSameBytes(exported, image, "exported image")
        #expect(written > 0 && written < Int64(size), "zero runs are left as holes, not written")
        #expect(try FileTools.allocatedBytes(exportPath) < Int64(size), "the export is sparse")

        // Ranges that cross 4 KiB, 64 KiB and 4 MiB boundaries, and the very end.
        var ranges: [(Int64, Int)] = [
            (0, 1), (4095, 2), (4096 - 100, 8192), (65536 - 1, 2), (65536 - 3000, 70_000),
            (Int64(4 * MiB) - 7, 14), (Int64(4 * MiB) - 65536 - 5, 3 * 65536 + 10), (Int64(8 * MiB) - 4096, 8192),
            (Int64(size) - 1, 1), (Int64(size) - 1234, 1234), (Int64(size) - 5000, 5000), (Int64(size), 0),
            (0, size),
        ]
        var rng = SeededRandom(seed: 11)
        for _ in 0..<60 {
            let count = 1 + rng.below(300_000)
            ranges.append((Int64(rng.below(size - count + 1)), count))
        }
        for (offset, count) in ranges {
            let got = try read(reader, at: offset, count: count)
            let want = Array(image[Int(offset)..<(Int(offset) + count)])
            expectSameBytes(got, want, "read of \(count) bytes at \(offset)")
        }

        // Outside the volume.
        expectError("store.beyond-end") { _ = try read(reader, at: Int64(size) - 10, count: 11) }
        expectError("store.beyond-end") { _ = try read(reader, at: -1, count: 1) }
        store.close()

        // A fresh read-only open sees the same.
        let again = try f.open(.read)
        #expect(again.commits(machine: "web-1") == [commit])
        expectSameBytes(try f.exported(again, machine: "web-1", volume: "root", point: commit.id.description), image, "export after reopen")
        again.close()
    }

    @Test("small and odd sizes round trip", arguments: [0, 1, 4095, 4096, 4097, 65535, 65537, 4 * 1024 * 1024 + 1])
    func oddSizes(size: Int) throws {
        let f = try StoreFixture()
        var image = TestImage.mixed(size: size, seed: UInt64(size) &+ 7)
        if size > 0 { image[size - 1] = 0x5A }  // a non-zero last byte, whatever the run kind
        let path = try f.writeImage("disk.img", image)
        let store = try f.open(.write)
        let commit = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])
        #expect(commit.volumes.first?.size == Int64(size))
        expectSameBytes(try f.exported(store, machine: "m", volume: "v", point: "latest"), image, "export of \(size) bytes")
        let reader = try store.reader(machine: "m", volume: "v", point: "latest")
        expectSameBytes(try read(reader, at: 0, count: size), image, "read of \(size) bytes")
        store.close()
    }

    @Test("one reader serves many threads at once")
    func concurrentReads() throws {
        let f = try StoreFixture()
        let size = 12 * MiB + 77
        let image = TestImage.mixed(size: size, seed: 12)
        let path = try f.writeImage("disk.img", image)
        let store = try f.open(.write)
        _ = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])
        let reader = try store.reader(machine: "m", volume: "v", point: "latest")
        let lock = PlainLock()
        nonisolated(unsafe) var failures: [String] = []
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            var rng = SeededRandom(seed: 1000 + UInt64(worker))
            for _ in 0..<40 {
                let count = 1 + rng.below(200_000)
                let offset = rng.below(size - count + 1)
                do {
                    let got = try read(reader, at: Int64(offset), count: count)
                    if got != Array(image[offset..<(offset + count)]) {
                        lock.withLock { failures.append("worker \(worker): \(count) bytes at \(offset) differ") }
                    }
                } catch {
                    lock.withLock { failures.append("worker \(worker): \(error)") }
                }
            }
        }
        #expect(failures.isEmpty, "\(failures)")
        store.close()
    }
}
