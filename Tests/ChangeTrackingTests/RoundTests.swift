import ChangeTracking
import LifeboatCore
import LifeboatTesting
import Testing

/// Capture in rounds (`collect(since:)`): the receiver applies every round to the same base in one commit and
/// must end with the volume as it was at the last round.
@Suite("Capture rounds")
struct RoundTests {
    /// Applies the extents of `set` on top of `state`, reading through the tracker.
    func overlay(_ state: inout [UInt8], _ set: ChangeSet, _ tracker: any ChangeTracker) throws {
        if state.count < Int(set.volumeSize) { state += [UInt8](repeating: 0, count: Int(set.volumeSize) - state.count) }
        for extent in set.extents {
            var buffer = [UInt8](repeating: 0, count: Int(extent.length))
            try buffer.withUnsafeMutableBytes { try tracker.read(extent, epoch: set.epoch, into: $0) }
            state.replaceSubrange(Int(extent.offset)..<Int(extent.end), with: buffer)
        }
    }

    @Test("a later round reports only what changed since the earlier round read, and together they are exact")
    func residueOnly() throws {
        let f = try TrackerFixture(size: 64 * block + 1000)
        let tracker = try f.tracker()
        var rng = SeededRandom(seed: 77)

        // Round 1 of the initial sync, with a write landing between collect and read (the read sees it).
        let first = try tracker.collect()
        // A block of the first round (not a zero block the round skips), written before the round reads it.
        let early = Int(try #require(first.extents.first).offset) / block
        try f.scribble(block: early, rng: &rng)
        var state: [UInt8] = []
        try overlay(&state, first, tracker)

        // Writes after round 1 read its blocks: only those are the residue.
        for b in [5, 40, 63] where b != early { try f.scribble(block: b, rng: &rng) }
        let second = try tracker.collect(since: first.epoch)
        #expect(second.baseEpoch == first.baseEpoch)
        #expect(second.reason == first.reason)
        #expect(second.epoch > first.epoch)
        #expect(second.extents == extents(ofBlocks: [5, 40, 63].filter { $0 != early }, volumeSize: 64 * block + 1000))
        try overlay(&state, second, tracker)
        #expect(state == (try f.contents()))

        // A quiet round is empty; acknowledging the last round retires the earlier ones.
        let third = try tracker.collect(since: second.epoch)
        #expect(third.extents.isEmpty)
        try tracker.acknowledge(epoch: third.epoch)
        #expect(tracker.outstandingEpochs.isEmpty)
        #expect(try tracker.collect().extents.isEmpty)
    }

    @Test("growth between rounds travels in the later round; an unknown epoch is refused")
    func growthAndUnknown() throws {
        let f = try TrackerFixture(size: 16 * block)
        let tracker = try f.tracker()
        let first = try tracker.collect()
        var state: [UInt8] = []
        try overlay(&state, first, tracker)
        var rng = SeededRandom(seed: 5)
        try FileTools.write(f.volumePath, rng.bytes(2 * block + 10), at: Int64(16 * block))
        let second = try tracker.collect(since: first.epoch)
        #expect(second.volumeSize == Int64(18 * block + 10))
        try overlay(&state, second, tracker)
        #expect(state == (try f.contents()))
        #expect(thrownCode { _ = try tracker.collect(since: 999) } == "tracker.unknown-epoch")
    }
}
