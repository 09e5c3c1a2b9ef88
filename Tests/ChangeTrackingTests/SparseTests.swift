import ChangeTracking
import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// A sparse image file: the first collect is its data ranges (SEEK_DATA/SEEK_HOLE, 4 KiB aligned); the scans
/// after it skip its holes and must still report exactly the blocks that differ, whatever the alignment of data
/// and holes, across chunk boundaries and at a partial last block.
@Suite("Scan tracker on sparse files")
struct SparseTests {
    @Test("holes read as zeros; data at unaligned offsets, allocated zeros, punched holes and filled holes are exact")
    func sparseFile() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-sparse")
        let path = dir.child("sparse.img")
        let size = 8 * MiB + 1234
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        try FileTools.truncate(path, to: Int64(size))
        var rng = SeededRandom(seed: 5)
        try FileTools.write(path, rng.bytes(100), at: 0)  // a partial first block
        try FileTools.write(path, rng.bytes(5000), at: 12345)  // spans two blocks, unaligned
        try FileTools.write(path, rng.bytes(64 * 1024), at: Int64(1 * MiB))  // one aligned run
        try FileTools.write(path, rng.bytes(300 * 1024), at: Int64(2 * MiB - 100 * 1024))  // across a chunk edge
        try FileTools.write(path, [UInt8](repeating: 0, count: 8192), at: Int64(3 * MiB))  // allocated, but zero
        try FileTools.write(path, rng.bytes(1000), at: Int64(size - 1000))  // the partial last block

        let options = ScanTracker.Options(threads: 2, chunkSize: 256 * 1024)
        let tracker = try ScanTracker(volume: "sparse", path: path, stateDirectory: dir.child("state"), options: options)
        // No scan: the data ranges, widened to 4 KiB blocks (the allocated zeros included).
        let first = try tracker.collect()
        #expect(first.reason == .initialSync)
        #expect(
            first.extents == [
                ChangedExtent(offset: 0, length: Int64(block)),
                ChangedExtent(offset: Int64(3 * block), length: Int64(2 * block)),
                ChangedExtent(offset: Int64(1 * MiB), length: 64 * 1024),
                ChangedExtent(offset: Int64(2 * MiB - 100 * 1024), length: 300 * 1024),
                ChangedExtent(offset: Int64(3 * MiB), length: 8192),
                ChangedExtent(offset: Int64(size / block * block), length: Int64(size % block)),
            ]
        )
        let bytes = try FileTools.read(path)
        // Whatever is outside them is a hole: zeros.
        let inData = first.extents.flatMap { Int($0.offset) / block..<((Int($0.end) + block - 1) / block) }
        #expect(Set(nonZeroBlocks(bytes)).isSubset(of: inData))
        #expect(try readAll(tracker, first) == extentBytes(bytes, in: first.extents))
        try tracker.acknowledge(epoch: first.epoch)

        // The first scan: the holes, the allocated zeros and the data are as read; nothing is reported.
        let quiet = try tracker.collect()
        #expect(quiet.reason == .incremental)
        #expect(quiet.extents.isEmpty)
        tracker.abandon(epoch: quiet.epoch)

        // Punch a hole into data, fill a former hole, rewrite the allocated zeros with zeros (no change).
        let punched = try run("/usr/bin/fallocate", ["--punch-hole", "--offset", "\(1 * MiB)", "--length", "\(32 * 1024)", path])
        try #require(punched.status == 0, "fallocate: \(punched.stderr)")
        try FileTools.write(path, rng.bytes(3 * block), at: Int64(5 * MiB))
        try FileTools.write(path, [UInt8](repeating: 0, count: 8192), at: Int64(3 * MiB))
        let second = try tracker.collect()
        let changed = Set((1 * MiB / block)..<((1 * MiB + 32 * 1024) / block)).union((5 * MiB / block)..<(5 * MiB / block + 3))
        #expect(second.extents == extents(ofBlocks: changed, volumeSize: size))
        try readAll(tracker, second)
        try tracker.acknowledge(epoch: second.epoch)

        // A fresh tracker starts from the data ranges as they are now (no punched hole, the filled one)...
        let fresh = try ScanTracker(volume: "sparse", path: path, stateDirectory: dir.child("state2"), options: options)
        let freshFirst = try fresh.collect()
        #expect(
            freshFirst.extents == [
                ChangedExtent(offset: 0, length: Int64(block)),
                ChangedExtent(offset: Int64(3 * block), length: Int64(2 * block)),
                ChangedExtent(offset: Int64(1 * MiB + 32 * 1024), length: 32 * 1024),
                ChangedExtent(offset: Int64(2 * MiB - 100 * 1024), length: 300 * 1024),
                ChangedExtent(offset: Int64(3 * MiB), length: 8192),
                ChangedExtent(offset: Int64(5 * MiB), length: Int64(3 * block)),
                ChangedExtent(offset: Int64(size / block * block), length: Int64(size % block)),
            ]
        )
        let now = try FileTools.read(path)
        #expect(try readAll(fresh, freshFirst) == extentBytes(now, in: freshFirst.extents))
        try fresh.acknowledge(epoch: freshFirst.epoch)
        // ...and its full scan from there agrees with the bytes on disk: nothing is reported, and acknowledged,
        // its fingerprints, like those of the tracker that followed every change, are those of the bytes on disk.
        let freshScan = try fresh.collect()
        #expect(freshScan.reason == .incremental)
        #expect(freshScan.extents.isEmpty)
        try readAll(fresh, freshScan)
        try fresh.acknowledge(epoch: freshScan.epoch)
        // The fingerprints follow the map file's 128-byte header (which holds the epoch and the volume's key).
        for map in [try FileTools.read(fresh.mapPath), try FileTools.read(tracker.mapPath)] {
            #expect(Array(map.dropFirst(128)) == (try expectedFingerprints(of: now, mapFile: map)))
        }
    }
}
