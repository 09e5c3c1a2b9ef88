import Agent
import ChangeTracking
import Foundation
import LifeboatCore
import LifeboatTesting
import Logging
import Testing

/// Kernel write hints (bpftrace on block:block_rq_complete) against a real loop device and a real ext4 on it.
@Suite(.serialized)
struct KernelHintsTests {
    static let logger = Logger(label: "test.hints")

    /// Writes `count` 4 KiB blocks of random bytes at `block` straight to the device (O_DIRECT).
    static func writeDirect(_ device: String, block: Int, count: Int = 1) throws {
        let r = try Processes.run(
            "/usr/bin/dd",
            ["if=/dev/urandom", "of=\(device)", "bs=4096", "count=\(count)", "seek=\(block)", "oflag=direct", "status=none"]
        )
        try #require(r.status == 0, "dd failed: \(r.stderr)")
    }

    /// The whole device, read past the page cache.
    static func deviceBytes(_ device: String, via file: String) throws -> [UInt8] {
        let r = try Processes.run("/usr/bin/dd", ["if=\(device)", "of=\(file)", "bs=1M", "iflag=direct", "status=none"])
        try #require(r.status == 0, "\(r.stderr)")
        defer { try? FileTools.removeFile(file) }
        return try FileTools.read(file)
    }

    @Test("drain reports the blocks written since the previous drain, and nothing else", .enabled(if: BPFTraceHints.isAvailable))
    func drainReportsWrites() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-hints")
        let fs = try FreezerLoopFilesystem(in: dir, name: "hinted")
        defer { fs.close() }
        // Unmount: this test writes the raw device.
        _ = try Processes.run("/usr/bin/umount", [fs.mountPoint])
        let hints = try BPFTraceHints(devicePath: fs.device, logger: Self.logger)
        defer { hints.stop() }
        _ = try hints.drain()
        try Self.writeDirect(fs.device, block: 10, count: 3)
        try Self.writeDirect(fs.device, block: 1000)
        let first = try #require(try hints.drain())
        let blocks = Set(first.flatMap { e in Int(e.offset / 4096)..<Int((e.offset + e.length + 4095) / 4096) })
        #expect(blocks.isSuperset(of: [10, 11, 12, 1000]))
        #expect(blocks.count <= 8, "unexpected hints: \(first)")
        #expect(try hints.drain()?.isEmpty == true)
    }

    @Test("a hinted scan tracker reads only what was written and finds exactly the changed blocks", .enabled(if: BPFTraceHints.isAvailable))
    func hintedTrackerIsExact() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-hints")
        let fs = try FreezerLoopFilesystem(in: dir, name: "tracked")
        defer { fs.close() }
        let hints = try BPFTraceHints(devicePath: fs.device, logger: Self.logger)
        defer { hints.stop() }
        let tracker = try ScanTracker(volume: "data", path: fs.device, stateDirectory: dir.child("state"), hints: hints)
        let initial = try tracker.collect()
        #expect(tracker.lastCollectWasFullScan)
        // The receiver's copy: an empty volume with the initial extents as the tracker read them.
        var model = [UInt8](repeating: 0, count: Int(initial.volumeSize))
        for e in initial.extents {
            var offset = e.offset
            while offset < e.end {
                let piece = ChangedExtent(offset: offset, length: min(Int64(4 << 20), e.end - offset))
                var bytes = [UInt8](repeating: 0, count: Int(piece.length))
                try bytes.withUnsafeMutableBytes { try tracker.read(piece, epoch: initial.epoch, into: $0) }
                model.replaceSubrange(Int(piece.offset)..<Int(piece.end), with: bytes)
                offset = piece.end
            }
        }
        try tracker.acknowledge(epoch: initial.epoch)

        // Files written through ext4 and synced; then frozen (ext4 also writes in the background: lazy inode table
        // initialisation, journal commits), so that the device holds still for the comparison.
        var rng = SeededRandom(seed: 4)
        try FileTools.write(fs.mountPoint + "/a.bin", rng.bytes(256 * KiB))
        _ = try Processes.run("/usr/bin/sync", [])
        try #require(try Processes.run("/usr/sbin/fsfreeze", ["-f", fs.mountPoint]).status == 0)
        defer { _ = try? Processes.run("/usr/sbin/fsfreeze", ["-u", fs.mountPoint]) }
        let next = try tracker.collect()
        #expect(!tracker.lastCollectWasFullScan)
        #expect(next.changedBytes >= Int64(256 * KiB))

        // Exact: the acknowledged content with the reported extents over it is the device now.
        #expect(next.baseEpoch == initial.epoch)
        for e in next.extents {
            var bytes = [UInt8](repeating: 0, count: Int(e.length))
            try bytes.withUnsafeMutableBytes { try tracker.read(e, epoch: next.epoch, into: $0) }
            model.replaceSubrange(Int(e.offset)..<Int(e.end), with: bytes)
        }
        let device = try Self.deviceBytes(fs.device, via: dir.child("copy.img"))
        let differing = stride(from: 0, to: device.count, by: 4096).filter { model[$0..<($0 + 4096)] != device[$0..<($0 + 4096)] }
        #expect(differing.isEmpty, "blocks differ: \(differing.prefix(20).map { $0 / 4096 }) of \(differing.count); reported \(next.extents.prefix(20))")
        // Nothing written since: a hinted collect since `next` is empty.
        let quiet = try tracker.collect(since: next.epoch)
        #expect(!tracker.lastCollectWasFullScan)
        #expect(quiet.extents.isEmpty, "\(quiet.extents)")
    }
}
