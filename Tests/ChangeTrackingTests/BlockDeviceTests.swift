import ChangeTracking
import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// A real block device: a loop device over an image file (the suite runs as root).
@Suite struct BlockDeviceTests {
    @Test func loopDevice() throws {
        let size = 8 * MiB
        let f = try TrackerFixture(size: size, seed: 30)
        let device = try f.attachLoopDevice()
        defer { _ = try? run("/usr/sbin/losetup", ["-d", device]) }

        let receiver = ModelReceiver()
        let t = try f.tracker(path: device)
        let initial = try t.collect()
        #expect(initial.volumeSize == Int64(size), "size via BLKGETSIZE64")
        // No scan at first: a block device is reported whole; the receiver reads it all.
        #expect(initial.extents == [ChangedExtent(offset: 0, length: Int64(size))])
        #expect(try receiver.apply(initial, from: t) == (try f.contents()))
        try t.acknowledge(epoch: initial.epoch)
        // Read and acknowledged: the zero blocks are known as zeros, the rest as read. Nothing is reported.
        #expect(try t.collect().extents.isEmpty)

        // Write through the device, as a guest would.
        var rng = SeededRandom(seed: 31)
        let blocks = [0, 1, 2, 999, 2047]
        for b in blocks { try FileTools.write(device, rng.bytes(block), at: Int64(b * block)) }
        let set = try t.collect()
        #expect(set.extents == extents(ofBlocks: blocks, volumeSize: size))
        let state = try receiver.apply(set, from: t)
        try t.acknowledge(epoch: set.epoch)
        #expect(state == (try FileTools.read(device, at: 0, count: size)))
    }
}
