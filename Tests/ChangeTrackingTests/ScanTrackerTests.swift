import ChangeTracking
import LifeboatCore
import LifeboatTesting
import Testing

@Suite struct ScanTrackerTests {
    /// The first collect does not scan: a fully allocated image (as `FileTools.write` makes it) is one extent
    /// over the whole volume, every block counting as zero until read. Read and acknowledged, the zero blocks
    /// are known as zeros and the others as read: nothing is reported again, and later changes are exact.
    @Test func initialCollectIsTheWholeAllocatedVolumeAndItsZeroBlocksAreNotReportedAgain() throws {
        let size = 3 * MiB + 5 * block
        let f = try TrackerFixture(size: size, seed: 11)
        let t = try f.tracker()
        let set = try t.collect()
        #expect(set.reason == .initialSync)
        #expect(set.baseEpoch == 0)
        #expect(set.epoch == 1)
        #expect(set.volumeSize == Int64(size))
        #expect(set.extents == [ChangedExtent(offset: 0, length: Int64(size))])
        let bytes = try f.contents()
        // The mixed image has zero runs and data: the receiver, empty at first, lacks only the data blocks.
        let nonZero = nonZeroBlocks(bytes)
        #expect(!nonZero.isEmpty && nonZero.count < size / block)
        #expect(try readAll(t, set) == bytes)
        try t.acknowledge(epoch: set.epoch)

        let next = try t.collect()
        #expect(next.reason == .incremental)
        #expect(next.baseEpoch == set.epoch)
        #expect(next.extents.isEmpty)
        t.abandon(epoch: next.epoch)
        // A zero block that gets data, and a data block turned to zeros: exactly those two.
        let zeroBlock = try #require((0..<(size / block)).first { !nonZero.contains($0) })
        let dataBlock = nonZero[nonZero.count / 2]
        var rng = SeededRandom(seed: 11)
        try f.scribble(block: zeroBlock, rng: &rng)
        try FileTools.write(f.volumePath, [UInt8](repeating: 0, count: block), at: Int64(dataBlock * block))
        #expect(try t.collect().extents == extents(ofBlocks: [zeroBlock, dataBlock], volumeSize: size))
    }

    @Test func noChangeAfterAcknowledgeIsEmpty() throws {
        let f = try TrackerFixture(size: 2 * MiB)
        let t = try f.tracker()
        let first = try t.collect()
        try readAll(t, first)
        try t.acknowledge(epoch: first.epoch)
        #expect(t.acknowledgedEpoch == first.epoch)
        let second = try t.collect()
        #expect(second.reason == .incremental)
        #expect(second.baseEpoch == first.epoch)
        #expect(second.epoch > first.epoch)
        #expect(second.extents.isEmpty)
    }

    @Test func randomWritesReportExactlyThoseBlocksCoalesced() throws {
        let size = 4 * MiB
        let f = try TrackerFixture(size: size, seed: 2)
        let t = try f.tracker()
        try collectReadAndAcknowledge(t)

        var rng = SeededRandom(seed: 99)
        var written = Set<Int>()
        for _ in 0..<40 { written.insert(rng.below(size / block)) }
        written.formUnion([100, 101, 102, 500, 501])  // adjacent runs coalesce
        written.formUnion([0, size / block - 1])  // first and last block
        for b in written { try f.scribble(block: b, rng: &rng) }
        // Rewriting a block with the same bytes is no change.
        let same = try FileTools.read(f.volumePath, at: Int64(700 * block), count: block)
        try FileTools.write(f.volumePath, same, at: Int64(700 * block))

        let set = try t.collect()
        let expected = extents(ofBlocks: written, volumeSize: size)
        #expect(set.extents == expected)
        #expect(set.extents.contains(ChangedExtent(offset: Int64(100 * block), length: Int64(3 * block))))
        #expect(set.extents.contains(ChangedExtent(offset: Int64(500 * block), length: Int64(2 * block))))
        #expect(set.changedBytes == Int64(written.count * block))
    }

    @Test func collectsWithoutAcknowledgeAreCumulative() throws {
        let size = 2 * MiB
        let f = try TrackerFixture(size: size, seed: 3)
        let t = try f.tracker()
        let start = try collectReadAndAcknowledge(t).epoch
        var rng = SeededRandom(seed: 5)

        for b in [3, 40, 41] { try f.scribble(block: b, rng: &rng) }
        let first = try t.collect()
        #expect(first.extents == extents(ofBlocks: [3, 40, 41], volumeSize: size))
        try readAll(t, first)  // sent; its acknowledgement comes late

        for b in [42, 300] { try f.scribble(block: b, rng: &rng) }
        let second = try t.collect()
        #expect(second.baseEpoch == start)
        #expect(second.epoch > first.epoch)
        #expect(second.extents == extents(ofBlocks: [3, 40, 41, 42, 300], volumeSize: size))

        // Acknowledging the older epoch leaves the newer outstanding; the next collect is relative to it.
        try t.acknowledge(epoch: first.epoch)
        #expect(t.outstandingEpochs == [second.epoch])
        let third = try t.collect()
        #expect(third.baseEpoch == first.epoch)
        #expect(third.extents == extents(ofBlocks: [42, 300], volumeSize: size))
        try readAll(t, third)
        try t.acknowledge(epoch: third.epoch)
        #expect(t.outstandingEpochs.isEmpty)  // `second` is older than `third`: retired with it
        #expect(try t.collect().extents.isEmpty)
        // A duplicate or late acknowledgement is a no-op.
        try t.acknowledge(epoch: second.epoch)
        try t.acknowledge(epoch: third.epoch)
        #expect(t.acknowledgedEpoch == third.epoch)
    }

    @Test func crashBeforeAcknowledgeReportsTheChangesAgain() throws {
        let size = 2 * MiB
        let f = try TrackerFixture(size: size, seed: 4)
        var rng = SeededRandom(seed: 6)
        let baseEpoch: UInt64
        let lost: ChangeSet
        do {
            let t = try f.tracker()
            baseEpoch = try collectReadAndAcknowledge(t).epoch
            for b in [7, 8, 200] { try f.scribble(block: b, rng: &rng) }
            lost = try t.collect()
            #expect(lost.extents == extents(ofBlocks: [7, 8, 200], volumeSize: size))
            try readAll(t, lost)  // sent
            // No acknowledge: the process dies here.
        }
        let t = try f.tracker()
        #expect(t.acknowledgedEpoch == baseEpoch)
        let again = try t.collect()
        #expect(again.reason == .incremental)
        #expect(again.baseEpoch == baseEpoch)
        #expect(again.extents == lost.extents)
        #expect(again.epoch > lost.epoch, "an epoch number is never reused, also across a restart")
    }

    @Test func acknowledgePersistsAcrossInstances() throws {
        let size = 2 * MiB
        let f = try TrackerFixture(size: size, seed: 5)
        var rng = SeededRandom(seed: 7)
        let acked: UInt64
        do {
            let t = try f.tracker()
            try collectReadAndAcknowledge(t)
            for b in [1, 2, 3] { try f.scribble(block: b, rng: &rng) }
            acked = try collectReadAndAcknowledge(t).epoch
        }
        let t = try f.tracker()
        #expect(t.acknowledgedEpoch == acked)
        let set = try t.collect()
        #expect(set.reason == .incremental)
        #expect(set.baseEpoch == acked)
        #expect(set.extents.isEmpty)
        #expect(FileTools.exists(t.mapPath))
        #expect(try FileTools.size(t.mapPath) == Int64(128 + (size / block) * 16))
        #expect(try FileTools.list(f.stateDir).allSatisfy { !$0.hasSuffix(".tmp") })
    }

    enum Damage: String, CaseIterable, Sendable {
        case flipFingerprintByte, flipHeaderByte, flipChecksumByte, truncateInContent, truncateInHeader, empty
        case garbage
    }

    @Test(arguments: Damage.allCases)
    func damagedMapLeadsToRescanThenIncrementalAgain(_ damage: Damage) throws {
        let size = 1 * MiB + 1000
        let f = try TrackerFixture(size: size, seed: 8)
        var rng = SeededRandom(seed: 8)
        let mapPath = try f.acknowledgedInitialSync()
        let mapSize = try FileTools.size(mapPath)
        switch damage {
        case .flipFingerprintByte: try FileTools.flipByte(mapPath, at: 128 + 16 * 77 + 3)
        case .flipHeaderByte: try FileTools.flipByte(mapPath, at: 40)  // the epoch
        case .flipChecksumByte: try FileTools.flipByte(mapPath, at: 100)
        case .truncateInContent: try FileTools.truncate(mapPath, to: mapSize - 16)
        case .truncateInHeader: try FileTools.truncate(mapPath, to: 100)
        case .empty: try FileTools.truncate(mapPath, to: 0)
        case .garbage: try FileTools.write(mapPath, rng.bytes(Int(mapSize)))
        }
        // Something changed meanwhile, too.
        try f.scribble(block: 9, rng: &rng)

        let t = try f.tracker()
        #expect(t.acknowledgedEpoch == 0)
        let rescan = try t.collect()
        guard case .rescan(let why) = rescan.reason else {
            Issue.record("expected a rescan, got \(rescan.reason)")
            return
        }
        #expect(!why.isEmpty)
        #expect(rescan.baseEpoch == 0)
        #expect(rescan.extents == [ChangedExtent(offset: 0, length: Int64(size))])
        // Until acknowledged, collects stay rescans.
        let rescanAgain = try t.collect()
        #expect(rescanAgain.reason == rescan.reason)
        #expect(rescanAgain.extents == rescan.extents)
        #expect(try readAll(t, rescanAgain) == (try f.contents()))
        try t.acknowledge(epoch: rescanAgain.epoch)

        for b in [10, 11, 255] { try f.scribble(block: b, rng: &rng) }
        let next = try t.collect()
        #expect(next.reason == .incremental)
        #expect(next.baseEpoch == rescanAgain.epoch)
        #expect(next.extents == extents(ofBlocks: [10, 11, 255], volumeSize: size))
    }

    @Test func rescanReasonsSayWhy() throws {
        let f = try TrackerFixture(size: 256 * KiB)
        let mapPath = try f.acknowledgedInitialSync()
        try FileTools.flipByte(mapPath, at: 200)
        do {
            let t = try f.tracker()
            #expect(
                try t.collect().reason
                    == .rescan("the fingerprint map's checksum does not match (torn write or damage)")
            )
        }
        try FileTools.truncate(mapPath, to: 50)
        let t = try f.tracker()
        let reason = try t.collect().reason
        #expect("\(reason)".contains("truncated"), "\(reason)")
    }

    @Test func mapOfAnotherVolumeIsNotUsed() throws {
        let f = try TrackerFixture(size: 256 * KiB, volumeID: "a")
        do {
            let t = try f.tracker()
            try collectReadAndAcknowledge(t)
            // Pretend an operator copied a's map to b's name.
            let other = f.stateDir + "/" + ScanTracker.stateName(for: "b") + ".fpmap"
            try FileTools.write(other, try FileTools.read(t.mapPath))
        }
        let b = try ScanTracker(volume: "b", path: f.volumePath, stateDirectory: f.stateDir)
        #expect(try b.collect().reason == .rescan("the fingerprint map belongs to another volume"))
    }

    @Test func growthReportsTheNewArea() throws {
        let size = 1 * MiB
        let f = try TrackerFixture(size: size, seed: 9)
        let t = try f.tracker()
        try collectReadAndAcknowledge(t)

        // Grown with zeros: the receiver extends with zeros, nothing to send.
        try FileTools.truncate(f.volumePath, to: Int64(2 * MiB))
        let zeros = try t.collect()
        #expect(zeros.volumeSize == Int64(2 * MiB))
        #expect(zeros.extents.isEmpty)
        try readAll(t, zeros)
        try t.acknowledge(epoch: zeros.epoch)

        // Grown with data: the data.
        var rng = SeededRandom(seed: 1)
        try FileTools.write(f.volumePath, rng.bytes(3 * block), at: Int64(3 * MiB))
        try f.scribble(block: 300, rng: &rng)  // and an old block
        let grown = try t.collect()
        #expect(grown.volumeSize == Int64(3 * MiB + 3 * block))
        let newBlocks = (3 * MiB / block)..<(3 * MiB / block + 3)
        #expect(grown.extents == extents(ofBlocks: Array(newBlocks) + [300], volumeSize: 3 * MiB + 3 * block))
    }

    @Test func shrinkIsAClearError() throws {
        let f = try TrackerFixture(size: 1 * MiB, seed: 10)
        let last = 1 * MiB / block - 1
        var rng = SeededRandom(seed: 10)
        try f.scribble(block: last, rng: &rng)
        let t = try f.tracker()
        try collectReadAndAcknowledge(t)
        try FileTools.truncate(f.volumePath, to: Int64(1 * MiB - block))
        #expect(thrownCode { _ = try t.collect() } == "tracker.volume-shrank")
        // Nothing was forgotten: back at its size, the volume reports the block that was cut (now zeros).
        try FileTools.truncate(f.volumePath, to: Int64(1 * MiB))
        #expect(try t.collect().extents == extents(ofBlocks: [last], volumeSize: 1 * MiB))
    }

    @Test func partialLastBlock() throws {
        let size = 10_000  // 2 blocks and 1808 bytes
        let f = try TrackerFixture(size: size)
        try FileTools.write(f.volumePath, [UInt8](repeating: 0xAB, count: size))
        let t = try f.tracker()
        let initial = try t.collect()
        #expect(initial.extents == [ChangedExtent(offset: 0, length: 10_000)])
        // One read of the whole extent, partial last block included, into a buffer that holds exactly it.
        var whole = [UInt8](repeating: 0, count: 10_000)
        try whole.withUnsafeMutableBytes { try t.read(initial.extents[0], epoch: initial.epoch, into: $0) }
        #expect(whole == [UInt8](repeating: 0xAB, count: size))
        try t.acknowledge(epoch: initial.epoch)

        try FileTools.write(f.volumePath, [1, 2, 3], at: 9_990)
        let tail = try t.collect()
        #expect(tail.extents == [ChangedExtent(offset: 8192, length: 1808)])
        var buffer = [UInt8](repeating: 0, count: 1808)
        try buffer.withUnsafeMutableBytes { try t.read(tail.extents[0], epoch: tail.epoch, into: $0) }
        #expect(Array(buffer[(9_990 - 8192)...].prefix(3)) == [1, 2, 3])
        try t.acknowledge(epoch: tail.epoch)

        // Growing with zeros keeps the old tail's fingerprint (it is hashed padded with zeros).
        try FileTools.truncate(f.volumePath, to: 20_000)
        let grown = try t.collect()
        #expect(grown.extents.isEmpty)
        try readAll(t, grown)
        try t.acknowledge(epoch: grown.epoch)
        try FileTools.write(f.volumePath, [9], at: 19_999)
        #expect(try t.collect().extents == [ChangedExtent(offset: 16_384, length: 3_616)])
    }

    @Test func emptyVolume() throws {
        let f = try TrackerFixture(size: 0)
        let t = try f.tracker()
        let set = try t.collect()
        #expect(set.volumeSize == 0 && set.extents.isEmpty)
        #expect(try readAll(t, set).isEmpty)
        try t.acknowledge(epoch: set.epoch)
        try FileTools.write(f.volumePath, [1], at: 0)
        #expect(try t.collect().extents == [ChangedExtent(offset: 0, length: 1)])
    }

    @Test func abandonKeepsTheChangesPending() throws {
        let size = 1 * MiB
        let f = try TrackerFixture(size: size, seed: 12)
        let t = try f.tracker()
        try collectReadAndAcknowledge(t)
        var rng = SeededRandom(seed: 2)
        try f.scribble(block: 5, rng: &rng)
        let set = try t.collect()
        t.abandon(epoch: set.epoch)
        #expect(thrownCode { try t.acknowledge(epoch: set.epoch) } == "tracker.unknown-epoch")
        #expect(
            thrownCode {
                var b = [UInt8](repeating: 0, count: block)
                try b.withUnsafeMutableBytes { try t.read(set.extents[0], epoch: set.epoch, into: $0) }
            } == "tracker.unknown-epoch"
        )
        #expect(try t.collect().extents == extents(ofBlocks: [5], volumeSize: size))
    }

    @Test func oldestOutstandingEpochIsDroppedBeyondTheLimit() throws {
        let f = try TrackerFixture(size: 256 * KiB)
        let t = try f.tracker(ScanTracker.Options(maxOutstandingEpochs: 2))
        let e1 = try t.collect().epoch
        let e2 = try t.collect().epoch
        let third = try t.collect()
        let e3 = third.epoch
        #expect(t.outstandingEpochs == [e2, e3])
        #expect(thrownCode { try t.acknowledge(epoch: e1) } == "tracker.unknown-epoch")
        try readAll(t, third)
        try t.acknowledge(epoch: e3)
        #expect(try t.collect().extents.isEmpty)
    }

    @Test func badReadsAreRejected() throws {
        let f = try TrackerFixture(size: 64 * KiB)
        let t = try f.tracker()
        let set = try t.collect()
        var buffer = [UInt8](repeating: 0, count: 2 * block)
        func read(_ offset: Int64, _ length: Int64, epoch: UInt64? = nil) -> String? {
            thrownCode {
                try buffer.withUnsafeMutableBytes {
                    try t.read(ChangedExtent(offset: offset, length: length), epoch: epoch ?? set.epoch, into: $0)
                }
            }
        }
        #expect(read(0, Int64(block)) == nil)
        #expect(read(1, Int64(block)) == "tracker.bad-extent")
        #expect(read(0, 100) == "tracker.bad-extent")
        #expect(read(0, Int64(3 * block)) == "tracker.bad-extent")  // larger than the buffer
        #expect(read(Int64(64 * KiB), Int64(block)) == "tracker.bad-extent")  // past the end
        #expect(read(0, Int64(block), epoch: 999) == "tracker.unknown-epoch")
    }

    @Test func oneTrackerPerVolume() throws {
        let f = try TrackerFixture(size: 64 * KiB)
        let t = try f.tracker()
        #expect(thrownCode { _ = try f.tracker() } == "tracker.locked")
        _ = t
        // A different volume in the same state directory is fine.
        _ = try ScanTracker(volume: "other", path: f.volumePath, stateDirectory: f.stateDir)
    }

    @Test func missingVolumeAndNonVolumes() throws {
        let f = try TrackerFixture(size: 64 * KiB)
        #expect(thrownCode { _ = try f.tracker(path: f.dir.child("nope")) } == "io.not-found")
        #expect(thrownCode { _ = try f.tracker(path: f.dir.path) } == "io.not-a-volume")
        #expect(
            thrownCode { _ = try ScanTracker(volume: "", path: f.volumePath, stateDirectory: f.stateDir) }
                == "tracker.invalid-volume"
        )
    }

    @Test func stateNamesAreSafeAndDistinct() {
        let a = ScanTracker.stateName(for: "vm-1:sda")
        let b = ScanTracker.stateName(for: "vm-1/sda")
        #expect(a.hasPrefix("vm-1_sda-") && b.hasPrefix("vm-1_sda-"))
        #expect(a != b)
        #expect(!ScanTracker.stateName(for: "../../etc").contains("/"))
        #expect(!ScanTracker.stateName(for: ".hidden").hasPrefix("."))
    }

    /// Several threads and small chunks find the same fingerprints as one thread with large chunks: both
    /// exactly the AES-256-GMAC of every block under each volume's own key.
    @Test func parallelScanMatchesSerialScan() throws {
        let size = 6 * MiB + 3 * block + 17
        let f = try TrackerFixture(size: size, seed: 13)
        let serial = try TrackerFixture(size: size, seed: 13)
        let many = try f.tracker(ScanTracker.Options(threads: 4, chunkSize: 64 * KiB))
        let one = try serial.tracker(ScanTracker.Options(threads: 1, chunkSize: 8 * MiB))
        // The first collect of an initial sync does not scan: read and acknowledged, it records what was read.
        try collectReadAndAcknowledge(many)
        try collectReadAndAcknowledge(one)
        // The next collect scans. Nothing changed: each scan agrees with what was read, and acknowledged, the
        // two scans' fingerprint maps are the blocks' fingerprints under each tracker's own key.
        let manyScan = try many.collect()
        let oneScan = try one.collect()
        #expect(manyScan.extents.isEmpty && oneScan.extents.isEmpty)
        try readAll(many, manyScan)
        try many.acknowledge(epoch: manyScan.epoch)
        try readAll(one, oneScan)
        try one.acknowledge(epoch: oneScan.epoch)
        let manyMap = try FileTools.read(many.mapPath)
        let oneMap = try FileTools.read(one.mapPath)
        #expect(Array(manyMap.dropFirst(128)) == (try expectedFingerprints(of: f.contents(), mapFile: manyMap)))
        #expect(Array(oneMap.dropFirst(128)) == (try expectedFingerprints(of: serial.contents(), mapFile: oneMap)))
        // Each volume has a key of its own.
        #expect(manyMap[64..<96] != oneMap[64..<96])
        var rng = SeededRandom(seed: 3)
        let blocks = [0, 15, 16, 17, 1000, size / block]
        for b in blocks {
            try FileTools.write(f.volumePath, rng.bytes(min(block, size - b * block)), at: Int64(b * block))
        }
        #expect(try many.collect().extents == extents(ofBlocks: blocks, volumeSize: size))
    }
}
