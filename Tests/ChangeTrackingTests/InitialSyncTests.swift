import ChangeTracking
import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// A sparse image: `size` bytes of hole with data written at known places (ext4 and tmpfs allocate exactly the
/// 4 KiB blocks a write touches).
private struct SparseImage {
    let dir: TemporaryDirectory
    let path: String
    let stateDir: String
    let size: Int

    init(size: Int = 4 * MiB + 1234, seed: UInt64 = 40) throws {
        precondition(size % 4096 > 1000)
        dir = try TemporaryDirectory(prefix: "lifeboat-initial")
        path = dir.child("sparse.img")
        stateDir = dir.child("state")
        self.size = size
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        try FileTools.truncate(path, to: Int64(size))
        var rng = SeededRandom(seed: seed)
        try FileTools.write(path, rng.bytes(100), at: 0)
        try FileTools.write(path, rng.bytes(5000), at: 12345)
        try FileTools.write(path, rng.bytes(65536), at: Int64(MiB))
        try FileTools.write(path, [UInt8](repeating: 0, count: 8192), at: Int64(2 * MiB))
        try FileTools.write(path, rng.bytes(1000), at: Int64(size - 1000))
    }

    /// The data ranges: a partial first block, 5000 bytes across blocks 3 and 4, one aligned 64 KiB run at
    /// 1 MiB, 8 KiB of written (allocated) zeros at 2 MiB, and the partial last block.
    var expectedExtents: [ChangedExtent] {
        [
            ChangedExtent(offset: 0, length: 4096),
            ChangedExtent(offset: 3 * 4096, length: 2 * 4096),
            ChangedExtent(offset: Int64(MiB), length: 65536),
            ChangedExtent(offset: Int64(2 * MiB), length: 8192),
            ChangedExtent(offset: Int64(size / 4096 * 4096), length: Int64(size % 4096)),
        ]
    }

    func tracker() throws -> ScanTracker {
        try ScanTracker(volume: "vm-1:sparse", path: path, stateDirectory: stateDir)
    }

    func contents() throws -> [UInt8] { try FileTools.read(path) }
}

/// Reads `extents` of `set` through the tracker onto `state` (grown to the set's size): what a receiver that
/// sent only those extents holds.
private func overlay(
    _ state: inout [UInt8],
    _ set: ChangeSet,
    _ tracker: any ChangeTracker,
    only extents: [ChangedExtent]? = nil
) throws {
    if state.count < Int(set.volumeSize) { state += [UInt8](repeating: 0, count: Int(set.volumeSize) - state.count) }
    for extent in extents ?? set.extents {
        var buffer = [UInt8](repeating: 0, count: Int(extent.length))
        try buffer.withUnsafeMutableBytes { try tracker.read(extent, epoch: set.epoch, into: $0) }
        state.replaceSubrange(Int(extent.offset)..<Int(extent.end), with: buffer)
    }
}

/// The blocks of `bytes` inside `extents` that hold a non-zero byte.
private func nonZeroBlocks(_ bytes: [UInt8], in extents: [ChangedExtent]) -> [Int] {
    let inside = Set(extents.flatMap { Int($0.offset) / block..<((Int($0.end) + block - 1) / block) })
    return nonZeroBlocks(bytes).filter { inside.contains($0) }
}

@Suite("Scan tracker: the lazy first collect of an initial sync")
struct InitialSyncTests {
    @Test(
        "a sparse file's first collect is its 4 KiB aligned data ranges; once read and acknowledged only later changes are reported"
    )
    func sparseDataRanges() throws {
        let image = try SparseImage()
        let tracker = try image.tracker()
        let initial = try tracker.collect()
        #expect(initial.reason == .initialSync)
        #expect(initial.baseEpoch == 0)
        #expect(initial.volumeSize == Int64(image.size))
        // Allocated zeros are data to SEEK_DATA: they are in the extents (and cost nothing on the wire).
        #expect(initial.extents == image.expectedExtents)

        var state: [UInt8] = []
        try overlay(&state, initial, tracker)
        #expect(state == (try image.contents()))
        try tracker.acknowledge(epoch: initial.epoch)
        #expect(tracker.acknowledgedEpoch == initial.epoch)

        // Nothing changed: nothing to send, and now from a real comparison.
        let quiet = try tracker.collect()
        #expect(quiet.reason == .incremental)
        #expect(quiet.baseEpoch == initial.epoch)
        #expect(quiet.extents.isEmpty)
        tracker.abandon(epoch: quiet.epoch)

        // Later writes: into data, into a hole, zeros over data, zeros into a hole (no change).
        var rng = SeededRandom(seed: 41)
        try FileTools.write(image.path, rng.bytes(4096), at: Int64(MiB + 8192))
        try FileTools.write(image.path, rng.bytes(3 * 4096), at: Int64(3 * MiB))
        try FileTools.write(image.path, [UInt8](repeating: 0, count: 4096), at: 12288)
        try FileTools.write(image.path, [UInt8](repeating: 0, count: 4096), at: Int64(2 * MiB + 65536))
        let later = try tracker.collect()
        let changed = [MiB / block + 2, 3 * MiB / block, 3 * MiB / block + 1, 3 * MiB / block + 2, 3]
        #expect(later.extents == extents(ofBlocks: changed, volumeSize: image.size))
        try overlay(&state, later, tracker)
        #expect(state == (try image.contents()))
        try tracker.acknowledge(epoch: later.epoch)
        #expect(try tracker.collect().extents.isEmpty)
    }

    @Test("a fully allocated image is reported whole at first; its zero blocks are not reported again")
    func allocatedFileIsWhole() throws {
        let size = 40 * block + 1000
        let f = try TrackerFixture(size: size, seed: 42)
        let tracker = try f.tracker()
        let initial = try tracker.collect()
        #expect(initial.reason == .initialSync)
        #expect(initial.extents == [ChangedExtent(offset: 0, length: Int64(size))])
        let receiver = ModelReceiver()
        #expect(try receiver.apply(initial, from: tracker) == (try f.contents()))
        try tracker.acknowledge(epoch: initial.epoch)
        #expect(try tracker.collect().extents.isEmpty)
    }

    @Test(
        "a block written into a hole after the first collect is reported by the next collect after the acknowledgement"
    )
    func writeIntoHoleBeforeAcknowledge() throws {
        let image = try SparseImage(seed: 43)
        let tracker = try image.tracker()
        let initial = try tracker.collect()
        #expect(initial.extents == image.expectedExtents)
        var rng = SeededRandom(seed: 44)
        // Before the read: into a hole (not in the extents) and into data (read as it is now).
        let holeBlock = 3 * MiB / block + 5
        try FileTools.write(image.path, rng.bytes(block), at: Int64(holeBlock * block))
        try FileTools.write(image.path, rng.bytes(block), at: Int64(MiB + 4 * block))
        var state: [UInt8] = []
        try overlay(&state, initial, tracker)
        // After the read, before the acknowledgement: into data already read, and into another hole.
        try FileTools.write(image.path, rng.bytes(block), at: 0)
        try FileTools.write(image.path, rng.bytes(2 * block), at: Int64(MiB + 65536))
        try tracker.acknowledge(epoch: initial.epoch)

        let next = try tracker.collect()
        #expect(next.reason == .incremental)
        #expect(next.baseEpoch == initial.epoch)
        // The write into data before the read travelled with the initial sync; the other three did not.
        let expected = [holeBlock, 0, (MiB + 65536) / block, (MiB + 65536) / block + 1]
        #expect(next.extents == extents(ofBlocks: expected, volumeSize: image.size))
        try overlay(&state, next, tracker)
        #expect(state == (try image.contents()))
        try tracker.acknowledge(epoch: next.epoch)
        #expect(try tracker.collect().extents.isEmpty)
    }

    @Test("an abandoned first collect is collected again from scratch; acknowledging it is refused")
    func abandonedInitialSync() throws {
        let image = try SparseImage(seed: 45)
        let tracker = try image.tracker()
        let first = try tracker.collect()
        var state: [UInt8] = []
        try overlay(&state, first, tracker, only: Array(first.extents.prefix(2)))
        tracker.abandon(epoch: first.epoch)
        #expect(thrownCode { try tracker.acknowledge(epoch: first.epoch) } == "tracker.unknown-epoch")
        #expect(tracker.acknowledgedEpoch == 0)

        let again = try tracker.collect()
        #expect(again.reason == .initialSync)
        #expect(again.baseEpoch == 0)
        #expect(again.epoch > first.epoch)
        #expect(again.extents == image.expectedExtents)
        let receiver = ModelReceiver()
        #expect(try receiver.apply(again, from: tracker) == (try image.contents()))
        try tracker.acknowledge(epoch: again.epoch)
        #expect(try tracker.collect().extents.isEmpty)
    }

    @Test("acknowledging a first collect after reading only part of it leaves the unread data for the next collect")
    func acknowledgedPrefix() throws {
        let image = try SparseImage(seed: 46)
        let tracker = try image.tracker()
        let first = try tracker.collect()
        try #require(first.extents == image.expectedExtents)
        // Read the first two extents and the first half of the 64 KiB run at 1 MiB; the receiver commits that.
        let prefix = Array(first.extents.prefix(2)) + [ChangedExtent(offset: Int64(MiB), length: 32768)]
        var state: [UInt8] = []
        try overlay(&state, first, tracker, only: prefix)
        try tracker.acknowledge(epoch: first.epoch)

        // Not read: the second half of the run, the allocated zeros (nothing to send: the receiver has zeros),
        // and the last block.
        let bytes = try image.contents()
        let unread = [
            ChangedExtent(offset: Int64(MiB + 32768), length: 32768),
            first.extents[3],
            first.extents[4],
        ]
        let expectedBlocks = nonZeroBlocks(bytes, in: unread)
        #expect(expectedBlocks.count == 8 + 1)
        let next = try tracker.collect()
        #expect(next.reason == .incremental)
        #expect(next.baseEpoch == first.epoch)
        #expect(next.extents == extents(ofBlocks: expectedBlocks, volumeSize: image.size))
        try overlay(&state, next, tracker)
        #expect(state == bytes)
        try tracker.acknowledge(epoch: next.epoch)
        #expect(try tracker.collect().extents.isEmpty)
    }

    @Test("acknowledging an incremental collect after reading only part of it reports the unread changes again")
    func acknowledgedPartOfIncremental() throws {
        let image = try SparseImage(seed: 53)
        let tracker = try image.tracker()
        let first = try tracker.collect()
        var state: [UInt8] = []
        try overlay(&state, first, tracker)
        try tracker.acknowledge(epoch: first.epoch)

        var rng = SeededRandom(seed: 54)
        let written = [0, 3 * MiB / block, 3 * MiB / block + 1, MiB / block + 9]
        for b in written { try FileTools.write(image.path, rng.bytes(block), at: Int64(b * block)) }
        // A block that changes and changes back is not a change: the receiver's base still has it.
        let before = try FileTools.read(image.path, at: Int64(MiB + 65536 - block), count: block)
        try FileTools.write(image.path, rng.bytes(block), at: Int64(MiB + 65536 - block))
        let changes = try tracker.collect()
        let changed = written + [MiB / block + 15]
        #expect(changes.extents == extents(ofBlocks: changed, volumeSize: image.size))
        // The receiver got block 0 and the first of the two at 3 MiB, then the commit landed.
        let sent = [
            ChangedExtent(offset: 0, length: Int64(block)), ChangedExtent(offset: Int64(3 * MiB), length: Int64(block)),
        ]
        try overlay(&state, changes, tracker, only: sent)
        try tracker.acknowledge(epoch: changes.epoch)
        try FileTools.write(image.path, before, at: Int64(MiB + 65536 - block))

        let next = try tracker.collect()
        #expect(next.reason == .incremental)
        #expect(next.baseEpoch == changes.epoch)
        #expect(next.extents == extents(ofBlocks: [3 * MiB / block + 1, MiB / block + 9], volumeSize: image.size))
        try overlay(&state, next, tracker)
        #expect(state == (try image.contents()))
        try tracker.acknowledge(epoch: next.epoch)
        #expect(try tracker.collect().extents.isEmpty)
    }

    @Test("a round after the first collect reports only what changed since its reads, holes included")
    func roundAfterLazyCollect() throws {
        let image = try SparseImage(seed: 47)
        let tracker = try image.tracker()
        let first = try tracker.collect()
        var state: [UInt8] = []
        try overlay(&state, first, tracker)
        var rng = SeededRandom(seed: 48)
        try FileTools.write(image.path, rng.bytes(block), at: Int64(3 * MiB))  // a hole
        try FileTools.write(image.path, rng.bytes(block), at: Int64(MiB))  // data already read
        let round = try tracker.collect(since: first.epoch)
        #expect(round.baseEpoch == 0)
        #expect(round.reason == .initialSync)
        #expect(round.extents == extents(ofBlocks: [MiB / block, 3 * MiB / block], volumeSize: image.size))
        try overlay(&state, round, tracker)
        #expect(state == (try image.contents()))
        try tracker.acknowledge(epoch: round.epoch)
        #expect(tracker.outstandingEpochs.isEmpty)
        #expect(try tracker.collect().extents.isEmpty)
    }

    @Test("a new tracker on the same state after the acknowledgement does no initial sync; before it, it does")
    func restart() throws {
        let image = try SparseImage(seed: 49)
        var rng = SeededRandom(seed: 50)
        var state: [UInt8] = []
        let unacknowledged: UInt64
        do {
            let tracker = try image.tracker()
            let first = try tracker.collect()
            try overlay(&state, first, tracker)
            unacknowledged = first.epoch
        }
        // Restarted before the acknowledgement: the initial sync starts over, under a new epoch.
        let acknowledged: UInt64
        do {
            let tracker = try image.tracker()
            let again = try tracker.collect()
            #expect(again.reason == .initialSync)
            #expect(again.epoch > unacknowledged)
            #expect(again.extents == image.expectedExtents)
            state = []
            try overlay(&state, again, tracker)
            try tracker.acknowledge(epoch: again.epoch)
            acknowledged = again.epoch
        }
        try FileTools.write(image.path, rng.bytes(block), at: Int64(3 * MiB))  // while no tracker runs

        let tracker = try image.tracker()
        #expect(tracker.acknowledgedEpoch == acknowledged)
        let next = try tracker.collect()
        #expect(next.reason == .incremental)
        #expect(next.baseEpoch == acknowledged)
        #expect(next.epoch > acknowledged)
        #expect(next.extents == extents(ofBlocks: [3 * MiB / block], volumeSize: image.size))
        try overlay(&state, next, tracker)
        #expect(state == (try image.contents()))
    }

    @Test("a rescan after the state was invalidated is collected the same way: the data ranges, onto an empty volume")
    func rescanIsLazyToo() throws {
        let image = try SparseImage(seed: 55)
        let tracker = try image.tracker()
        let first = try tracker.collect()
        let receiver = ModelReceiver()
        try receiver.apply(first, from: tracker)
        try tracker.acknowledge(epoch: first.epoch)
        var rng = SeededRandom(seed: 56)
        try FileTools.write(image.path, rng.bytes(2 * block), at: Int64(3 * MiB))

        try tracker.invalidate(reason: "the server lost the point")
        let rescan = try tracker.collect()
        #expect(rescan.reason == .rescan("the server lost the point"))
        #expect(rescan.baseEpoch == 0)
        // Not the whole volume: the receiver starts the volume from zeros, so holes need not travel.
        var expected = image.expectedExtents
        expected.insert(ChangedExtent(offset: Int64(3 * MiB), length: Int64(2 * block)), at: 4)
        #expect(rescan.extents == expected)
        #expect(try receiver.apply(rescan, from: tracker) == (try image.contents()))
        try tracker.acknowledge(epoch: rescan.epoch)
        let after = try tracker.collect()
        #expect(after.reason == .incremental)
        #expect(after.extents.isEmpty)
    }

    @Test("a block device's first collect is the whole device; read and acknowledged, only later writes are reported")
    func loopDevice() throws {
        let size = 8 * MiB
        let f = try TrackerFixture(size: size, seed: 51)
        let device = try f.attachLoopDevice()
        defer { _ = try? run("/usr/sbin/losetup", ["-d", device]) }

        let tracker = try f.tracker(path: device)
        let initial = try tracker.collect()
        #expect(initial.reason == .initialSync)
        #expect(initial.extents == [ChangedExtent(offset: 0, length: Int64(size))])
        let receiver = ModelReceiver()
        #expect(try receiver.apply(initial, from: tracker) == (try f.contents()))
        try tracker.acknowledge(epoch: initial.epoch)
        #expect(try tracker.collect().extents.isEmpty)

        var rng = SeededRandom(seed: 52)
        let blocks = [0, 17, 2047]
        for b in blocks { try FileTools.write(device, rng.bytes(block), at: Int64(b * block)) }
        let set = try tracker.collect()
        #expect(set.extents == extents(ofBlocks: blocks, volumeSize: size))
        #expect(try receiver.apply(set, from: tracker) == (try FileTools.read(device, at: 0, count: size)))
    }
}
