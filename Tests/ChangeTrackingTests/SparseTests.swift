import ChangeTracking
import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// A sparse image file: the scan skips its holes (SEEK_DATA/SEEK_HOLE) and must still report exactly the blocks
/// that differ, whatever the alignment of data and holes, across chunk boundaries and at a partial last block.
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
        let first = try tracker.collect()
        let bytes = try FileTools.read(path)
        #expect(first.extents == extents(ofBlocks: nonZeroBlocks(bytes), volumeSize: size))
        try tracker.acknowledge(epoch: first.epoch)

        // Punch a hole into data, fill a former hole, rewrite the allocated zeros with zeros (no change).
        let punched = try run("/usr/bin/fallocate", ["--punch-hole", "--offset", "\(1 * MiB)", "--length", "\(32 * 1024)", path])
        try #require(punched.status == 0, "fallocate: \(punched.stderr)")
        try FileTools.write(path, rng.bytes(3 * block), at: Int64(5 * MiB))
        try FileTools.write(path, [UInt8](repeating: 0, count: 8192), at: Int64(3 * MiB))
        let second = try tracker.collect()
        let changed = Set((1 * MiB / block)..<((1 * MiB + 32 * 1024) / block)).union((5 * MiB / block)..<(5 * MiB / block + 3))
        #expect(second.extents == extents(ofBlocks: changed, volumeSize: size))

        // A fresh tracker (a full scan from nothing) agrees with the bytes on disk.
        let fresh = try ScanTracker(volume: "sparse", path: path, stateDirectory: dir.child("state2"), options: options)
        #expect(try fresh.collect().extents == extents(ofBlocks: nonZeroBlocks(try FileTools.read(path)), volumeSize: size))
    }
}
