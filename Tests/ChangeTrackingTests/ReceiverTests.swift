import ChangeTracking
import LifeboatCore
import LifeboatTesting
import Testing

/// End to end with a model receiver: whatever happens (writes during transfers, lost acknowledgements,
/// crashes, abandoned transfers, damaged state), the acknowledged state equals the volume once it is quiet.
@Suite struct ReceiverTests {
    /// A block changes after the scan, the agent sends the newer bytes, then the block changes back to what
    /// the scan saw: the receiver holds the newer bytes, so the block must be reported again.
    @Test func blockChangedBackAfterTheScanIsReportedAgain() throws {
        let size = 256 * KiB
        let f = try TrackerFixture(size: size, seed: 20)
        let t = try f.tracker()
        let receiver = ModelReceiver()
        let first = try t.collect()
        try receiver.apply(first, from: t)
        try t.acknowledge(epoch: first.epoch)

        let x = [UInt8](repeating: 0x58, count: block)
        let y = [UInt8](repeating: 0x59, count: block)
        try FileTools.write(f.volumePath, x, at: Int64(5 * block))
        let scanned = try t.collect()  // sees X
        #expect(scanned.extents == extents(ofBlocks: [5], volumeSize: size))
        try FileTools.write(f.volumePath, y, at: Int64(5 * block))  // before the agent reads it
        let sent = try receiver.apply(scanned, from: t)  // sends Y
        #expect(Array(sent[(5 * block)..<(6 * block)]) == y)
        try t.acknowledge(epoch: scanned.epoch)

        try FileTools.write(f.volumePath, x, at: Int64(5 * block))  // back to what the scan saw
        let again = try t.collect()
        #expect(again.extents == extents(ofBlocks: [5], volumeSize: size))
        #expect(try receiver.apply(again, from: t) == (try f.contents()))
    }

    /// A lost acknowledgement: the receiver committed an epoch the agent never saw acknowledged, and a block
    /// changed there changed back. Building on the acknowledged base gives the right volume.
    @Test func lostAcknowledgementWithARevertedBlock() throws {
        let size = 256 * KiB
        let f = try TrackerFixture(size: size, seed: 21)
        let receiver = ModelReceiver()
        let original = try FileTools.read(f.volumePath, at: Int64(9 * block), count: block)
        do {
            let t = try f.tracker()
            let first = try t.collect()
            try receiver.apply(first, from: t)
            try t.acknowledge(epoch: first.epoch)
            try FileTools.write(f.volumePath, [UInt8](repeating: 7, count: block), at: Int64(9 * block))
            try receiver.apply(try t.collect(), from: t)  // committed by the receiver, acknowledgement lost
        }
        try FileTools.write(f.volumePath, original, at: Int64(9 * block))  // changed back
        let t = try f.tracker()
        let set = try t.collect()
        #expect(set.extents.isEmpty)
        #expect(try receiver.apply(set, from: t) == (try f.contents()))
    }

    @Test(arguments: [UInt64(1), 2, 3])
    func randomHistory(seed: UInt64) throws {
        let size = 1 * MiB + 3 * block + 100
        let f = try TrackerFixture(size: size, seed: seed)
        var rng = SeededRandom(seed: seed)
        let receiver = ModelReceiver()
        var tracker: ScanTracker? = try f.tracker(ScanTracker.Options(chunkSize: 64 * KiB))
        var currentSize = size

        func writeSomething() throws {
            for _ in 0..<(1 + rng.below(20)) {
                let b = rng.below((currentSize + block - 1) / block)
                let length = min(block, currentSize - b * block)
                switch rng.below(4) {
                case 0: try FileTools.write(f.volumePath, [UInt8](repeating: 0, count: length), at: Int64(b * block))
                case 1:
                    try FileTools.write(
                        f.volumePath,
                        [UInt8](repeating: UInt8(rng.below(3)), count: length),
                        at: Int64(b * block)
                    )
                default: try FileTools.write(f.volumePath, rng.bytes(length), at: Int64(b * block))
                }
            }
        }

        for _ in 0..<40 {
            try writeSomething()
            if rng.below(10) == 0 {
                currentSize += rng.below(3) * 5000
                try FileTools.truncate(f.volumePath, to: Int64(currentSize))
            }
            let set = try tracker!.collect()
            if rng.below(4) == 0 { try writeSomething() }  // the volume is live during the transfer
            switch rng.below(8) {
            case 0:
                tracker!.abandon(epoch: set.epoch)  // transfer failed
            case 1:
                try receiver.apply(set, from: tracker!)  // committed, acknowledgement lost, agent restarts
                tracker = nil
                tracker = try f.tracker(ScanTracker.Options(chunkSize: 64 * KiB))
            case 2:
                try receiver.apply(set, from: tracker!)  // crash and damaged state
                tracker = nil
                try FileTools.flipByte(f.stateDir + "/" + ScanTracker.stateName(for: f.volumeID) + ".fpmap", at: 130)
                tracker = try f.tracker(ScanTracker.Options(chunkSize: 64 * KiB))
            default:
                let state = try receiver.apply(set, from: tracker!)
                try tracker!.acknowledge(epoch: set.epoch)
                #expect(state.count == Int(set.volumeSize))
            }
        }
        // Quiet now: one more round makes the receiver equal to the volume.
        let t = tracker!
        let last = try t.collect()
        let state = try receiver.apply(last, from: t)
        try t.acknowledge(epoch: last.epoch)
        #expect(ByteCompare.firstDifference(state, try f.contents()) == nil)
        #expect(try t.collect().extents.isEmpty)
    }
}
