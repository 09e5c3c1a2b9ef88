import Dispatch
import LifeboatCore
import LifeboatTesting
import Testing

@testable import StagingStore

private let segment = 65536

/// One zstd frame of `content` as a sender makes it (level 1, no content size); for data zstd cannot shrink
/// by 1/32, a frame that is larger than the content (the store must then keep the plain bytes).
private func senderFrame(_ content: [UInt8]) -> [UInt8] {
    let compressor = ZstdCompressor(level: 1)
    var out = [UInt8](repeating: 0, count: content.count)
    let n = content.withUnsafeBytes { src in out.withUnsafeMutableBytes { compressor.compress(src, into: $0) } }
    if let n { return Array(out[0..<n]) }
    return Zstd.compress(content)
}

/// Prepares a whole segment from its content and its sender's frame.
private func prepare(_ builder: CommitBuilder, _ content: [UInt8]) throws -> PreparedSegment {
    try senderFrame(content).withUnsafeBytes { try builder.prepareSegment(content: content, frame: $0) }
}

/// Puts a whole segment into the builder and into the in-memory model.
private func put(
    _ builder: CommitBuilder,
    _ model: inout [UInt8],
    volume: String = "disk",
    index: Int,
    _ content: [UInt8]
) throws {
    try builder.putSegment(volume: volume, index: index, try prepare(builder, content))
    model.replaceSubrange((index * segment)..<((index + 1) * segment), with: content)
}

/// 64 KiB of log-like text (compressible).
private func textSegment(_ rng: inout SeededRandom) -> [UInt8] {
    var slice = ArraySlice([UInt8](repeating: 0, count: segment))
    TestImage.fillText(&slice, rng: &rng)
    return Array(slice)
}

/// The map entry of every segment of a volume in a commit (the chunk ids the commit refers to).
private func segmentEntries(_ store: Store, _ commit: CommitRecord, volume: String = "disk") throws -> [SegmentEntry] {
    let state = try #require(commit.volumes.first { $0.name == volume })
    let tree = VolumeTree(blobs: store.blobs, cipher: store.cipher)
    let leaves = try tree.leafIDs(root: state.root, height: state.height, size: state.size)
    let entries = try leaves.flatMap { try tree.loadLeaf($0) }
    return Array(entries.prefix(Int((state.size + Int64(segment) - 1) / Int64(segment))))
}

/// AES-GCM's nonce and tag around every sealed blob.
private let sealOverhead = 12 + 16

@Suite("Prepared segments: whole 64 KiB segments stored from the sender's zstd frames")
struct PreparedSegmentTests {
    @Test("segments put from frames read back exactly and refer to the same chunks as the same bytes written")
    func putMatchesWrite() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        var rng = SeededRandom(seed: 101)
        let segments = 40  // more than one 4 MiB leaf (64 segments would be one leaf exactly; 40 + tail is two)
        let size = 70 * segment + 5000  // the last segment is not whole
        var contents: [[UInt8]] = []
        for i in 0..<segments {
            switch i % 5 {
            case 0: contents.append(textSegment(&rng))
            case 1: contents.append(rng.bytes(segment))
            case 2: contents.append([UInt8](repeating: 0, count: segment))
            case 3:
                // Mostly zero with three data blocks: stored as blocks, not whole (fewer than half changed).
                var s = [UInt8](repeating: 0, count: segment)
                for b in [1, 7, 8] {
                    s.replaceSubrange((b * blockSize)..<((b + 1) * blockSize), with: rng.bytes(blockSize))
                }
                contents.append(s)
            default: contents.append(TestImage.repeating(Array("segment \(i) ".utf8), size: segment))
            }
        }
        let indexes = (0..<segments).map { $0 < 20 ? $0 : $0 + 30 }  // the second half in the second leaf

        // Prepared on several threads at once (as the server decodes), then put in order.
        let builder = try store.beginCommit(machine: "via-put")
        try builder.setSize(volume: "disk", size: Int64(size))
        let frames = contents.map(senderFrame)
        let slots = PreparedSlots(count: segments)
        let inputs = contents
        DispatchQueue.concurrentPerform(iterations: segments) { i in
            slots.set(
                i,
                Result { try frames[i].withUnsafeBytes { try builder.prepareSegment(content: inputs[i], frame: $0) } }
            )
        }
        var model = [UInt8](repeating: 0, count: size)
        for i in 0..<segments {
            let prepared = try slots.get(i).get()
            #expect(prepared.isZero == (i % 5 == 2))
            #expect(
                prepared.compressed == (i % 5 != 1 && i % 5 != 2),
                "segment \(i): random is kept plain, the rest as the frame"
            )
            try builder.putSegment(volume: "disk", index: indexes[i], prepared)
            model.replaceSubrange((indexes[i] * segment)..<((indexes[i] + 1) * segment), with: contents[i])
        }
        // The tail beyond the last whole segment goes through `write`.
        let tail = rng.bytes(5000)
        try tail.withUnsafeBytes { try builder.write(volume: "disk", offset: Int64(70 * segment), bytes: $0) }
        model.replaceSubrange((70 * segment)..<size, with: tail)
        let viaPut = try builder.commit()

        expectSameBytes(
            try f.exported(store, machine: "via-put", volume: "disk", point: "latest"),
            model,
            "export of the put commit"
        )
        let reader = try store.reader(machine: "via-put", volume: "disk", point: "latest")
        expectSameBytes(
            try read(reader, at: Int64(20 * segment - 4096), count: 3 * 4096),
            Array(model[(20 * segment - 4096)..<(20 * segment + 8192)]),
            "across a put segment's end"
        )
        #expect(viaPut.changedBytes == UInt64(nonZeroBlocks(model) * blockSize))

        // Whole segments stored from frames keep the sender's frame as the chunk body: no second compression.
        let entries = try segmentEntries(store, viaPut)
        for i in 0..<segments {
            let entry = entries[indexes[i]]
            switch i % 5 {
            case 2:
                #expect(entry == .hole, "segment \(i): zeros are a hole")
            case 3:
                guard case .composite = entry else {
                    Issue.record("segment \(i): three blocks of sixteen should be stored as blocks, not \(entry)")
                    continue
                }
            default:
                guard case .whole(let id) = entry else {
                    Issue.record("segment \(i) should be stored whole, not \(entry)")
                    continue
                }
                let location = try #require(store.blobs.location(of: id))
                #expect(location.rawLength == UInt32(segment))
                if i % 5 == 1 {
                    #expect(!location.compressed && location.length == UInt32(segment + sealOverhead))
                } else {
                    #expect(
                        location.compressed && location.length == UInt32(frames[i].count + sealOverhead),
                        "segment \(i)"
                    )
                }
            }
        }

        // The same bytes through `write`, as another machine: the same chunk ids, and nothing new is stored.
        let blobsBefore = try store.stats().blobs
        let writer = try store.beginCommit(machine: "via-write")
        try writer.setSize(volume: "disk", size: Int64(size))
        for i in 0..<segments {
            try contents[i].withUnsafeBytes {
                try writer.write(volume: "disk", offset: Int64(indexes[i] * segment), bytes: $0)
            }
        }
        try tail.withUnsafeBytes { try writer.write(volume: "disk", offset: Int64(70 * segment), bytes: $0) }
        let viaWrite = try writer.commit()
        #expect(try segmentEntries(store, viaWrite) == entries)
        #expect(viaWrite.volumes.first?.root == viaPut.volumes.first?.root, "identical maps")
        #expect(viaWrite.storedBytes == 0, "stored \(viaWrite.storedBytes) bytes for data the store has")
        #expect(try store.stats().blobs == blobsBefore)
        #expect(viaWrite.changedBytes == viaPut.changedBytes)
        expectSameBytes(
            try f.exported(store, machine: "via-write", volume: "disk", point: "latest"),
            model,
            "export of the write commit"
        )

        // And the other way round: put after write of the same data stores nothing either.
        let again = try store.beginCommit(machine: "put-again")
        try again.setSize(volume: "disk", size: Int64(size))
        var scratch = [UInt8](repeating: 0, count: size)
        for i in 0..<segments { try put(again, &scratch, index: indexes[i], contents[i]) }
        try tail.withUnsafeBytes { try again.write(volume: "disk", offset: Int64(70 * segment), bytes: $0) }
        let putAgain = try again.commit()
        #expect(putAgain.storedBytes == 0)
        #expect(try segmentEntries(store, putAgain) == entries)
        store.close()

        let ro = try f.open(.read)
        expectSameBytes(
            try f.exported(ro, machine: "put-again", volume: "disk", point: "latest"),
            model,
            "export after reopen"
        )
        #expect(try ro.verify().isClean)
        ro.close()
    }

    @Test("puts and partial writes of the same segments mix in one commit in any order; the last one wins")
    func mixedInOneCommit() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        var rng = SeededRandom(seed: 102)
        let size = 12 * segment
        var model = [UInt8](repeating: 0, count: size)
        let b = try store.beginCommit(machine: "mix")
        try b.setSize(volume: "disk", size: Int64(size))

        // 0: put, then a partial write into it (the write lands on the put's bytes).
        try put(b, &model, index: 0, textSegment(&rng))
        try apply(b, &model, volume: "disk", offset: 2 * blockSize, rng.bytes(2 * blockSize))
        // 1: a partial write, then a put: the put replaces the whole segment.
        try apply(b, &model, volume: "disk", offset: segment + 5 * blockSize, rng.bytes(3 * blockSize))
        try put(b, &model, index: 1, rng.bytes(segment))
        // 2: put, put again (rounds of one capture).
        try put(b, &model, index: 2, textSegment(&rng))
        try put(b, &model, index: 2, textSegment(&rng))
        // 3: write, put, write, put.
        try apply(b, &model, volume: "disk", offset: 3 * segment, rng.bytes(blockSize))
        try put(b, &model, index: 3, rng.bytes(segment))
        try apply(b, &model, volume: "disk", offset: 3 * segment + 15 * blockSize, rng.bytes(blockSize))
        try put(b, &model, index: 3, textSegment(&rng))
        // 4 and 5: both put, then one write across their boundary.
        try put(b, &model, index: 4, textSegment(&rng))
        try put(b, &model, index: 5, rng.bytes(segment))
        try apply(b, &model, volume: "disk", offset: 5 * segment - 2 * blockSize, rng.bytes(4 * blockSize))
        // 6: a write across the 6/7 boundary, then a put of 7 only: 6 keeps the write, 7 is the put.
        try apply(b, &model, volume: "disk", offset: 7 * segment - blockSize, rng.bytes(2 * blockSize))
        try put(b, &model, index: 7, textSegment(&rng))
        // 8: data written, then an all-zero segment put over it: zeros.
        try apply(b, &model, volume: "disk", offset: 8 * segment, rng.bytes(6 * blockSize))
        try put(b, &model, index: 8, [UInt8](repeating: 0, count: segment))
        // 9: data put, then overwritten with zeros by a write: zeros again.
        try put(b, &model, index: 9, rng.bytes(segment))
        try apply(b, &model, volume: "disk", offset: 9 * segment, [UInt8](repeating: 0, count: segment))
        // 10: put, put of zeros, put of data again.
        try put(b, &model, index: 10, textSegment(&rng))
        try put(b, &model, index: 10, [UInt8](repeating: 0, count: segment))
        let last = textSegment(&rng)
        try put(b, &model, index: 10, last)
        // 11: a put whose content equals what the segment already holds in this commit.
        try put(b, &model, index: 11, last)
        try put(b, &model, index: 11, last)

        let commit = try b.commit()
        expectSameBytes(try f.exported(store, machine: "mix", volume: "disk", point: "latest"), model, "mixed commit")
        #expect(commit.changedBytes == UInt64(nonZeroBlocks(model) * blockSize))
        let entries = try segmentEntries(store, commit)
        #expect(entries[8] == .hole)
        #expect(entries[9] == .hole)
        #expect(entries[10] == entries[11], "equal content, one chunk")
        #expect(try store.verify().isClean)
        store.close()
    }

    @Test("puts on top of a parent commit: exact content, changed bytes counted against the parent, once")
    func incremental() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        var rng = SeededRandom(seed: 103)
        let size = 10 * segment + 3 * blockSize
        var model = [UInt8](repeating: 0, count: size)
        let first = try store.beginCommit(machine: "inc")
        try first.setSize(volume: "disk", size: Int64(size))
        for i in 0..<10 where i != 6 {
            try put(first, &model, index: i, i % 2 == 0 ? textSegment(&rng) : rng.bytes(segment))
        }
        try apply(first, &model, volume: "disk", offset: 10 * segment, rng.bytes(3 * blockSize))
        let c1 = try first.commit()
        #expect(c1.changedBytes == UInt64(nonZeroBlocks(model) * blockSize))
        let before = model

        let second = try store.beginCommit(machine: "inc")
        #expect(second.parent == c1)
        // 0: the same bytes again (no change).
        try put(second, &model, index: 0, Array(before[0..<segment]))
        // 1: two blocks differ from the parent (stored as blocks, not whole).
        var one = Array(before[segment..<(2 * segment)])
        one.replaceSubrange((4 * blockSize)..<(6 * blockSize), with: rng.bytes(2 * blockSize))
        try put(second, &model, index: 1, one)
        // 2: all new.
        try put(second, &model, index: 2, textSegment(&rng))
        // 3: changed, then changed back to the parent's bytes within the commit: no change.
        try put(second, &model, index: 3, rng.bytes(segment))
        try put(second, &model, index: 3, Array(before[(3 * segment)..<(4 * segment)]))
        // 4: put twice with different data: counted once against the parent.
        try put(second, &model, index: 4, rng.bytes(segment))
        try put(second, &model, index: 4, rng.bytes(segment))
        // 5: zeros over data.
        try put(second, &model, index: 5, [UInt8](repeating: 0, count: segment))
        // 6: data into the parent's hole.
        try put(second, &model, index: 6, rng.bytes(segment))
        // 7: a partial write first, then a put that restores half of it.
        try apply(second, &model, volume: "disk", offset: 7 * segment, rng.bytes(4 * blockSize))
        var seven = Array(before[(7 * segment)..<(8 * segment)])
        seven.replaceSubrange(0..<(2 * blockSize), with: rng.bytes(2 * blockSize))
        try put(second, &model, index: 7, seven)
        // 8: a put, then a partial write of the parent's bytes over the changed part: no change left.
        var eight = Array(before[(8 * segment)..<(9 * segment)])
        eight.replaceSubrange((10 * blockSize)..<(12 * blockSize), with: rng.bytes(2 * blockSize))
        try put(second, &model, index: 8, eight)
        try apply(
            second,
            &model,
            volume: "disk",
            offset: 8 * segment + 10 * blockSize,
            Array(before[(8 * segment + 10 * blockSize)..<(8 * segment + 12 * blockSize)])
        )
        let c2 = try second.commit()

        #expect(c2.changedBytes == UInt64(changedBlocks(before, model) * blockSize), "changed \(c2.changedBytes)")
        #expect(changedBlocks(before, model) == 2 + 16 + 16 + 16 + 16 + 2)
        expectSameBytes(try f.exported(store, machine: "inc", volume: "disk", point: "latest"), model, "second point")
        expectSameBytes(
            try f.exported(store, machine: "inc", volume: "disk", point: c1.id.description),
            before,
            "first point"
        )
        let e1 = try segmentEntries(store, c1)
        let e2 = try segmentEntries(store, c2)
        #expect(e2[0] == e1[0])
        #expect(e2[3] == e1[3])
        #expect(e2[5] == .hole)
        #expect(e2[8].fingerprint == e1[8].fingerprint)
        // Segment 1 cost its two new blocks, not a whole segment: they are one chunk of two blocks.
        guard case .composite = e2[1] else {
            Issue.record("two changed blocks of a segment should be stored as blocks, not \(e2[1])")
            return
        }
        let references = e2[1].blockReferences()
        let newChunk = try #require(references[4].chunk)
        #expect(references[5].chunk == newChunk)
        #expect(store.blobs.location(of: newChunk)?.rawLength == UInt32(2 * blockSize))
        #expect(references[0].chunk == e1[1].fingerprint, "the unchanged blocks still come from the parent's chunk")
        #expect(try store.verify().isClean)
        store.close()
    }

    @Test(
        "after a reset (a sender's initial sync onto an existing volume) puts give what writes of the same bytes give"
    )
    func resetThenPut() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        var rng = SeededRandom(seed: 106)
        let size = 8 * segment
        let old = rng.bytes(size)
        let fresh = (0..<5).map { $0 % 2 == 0 ? textSegment(&rng) : rng.bytes(segment) }
        let partial = rng.bytes(3 * blockSize)
        var model = [UInt8](repeating: 0, count: size)
        var results: [CommitRecord] = []
        for (machine, usePut) in [("reset-put", true), ("reset-write", false)] {
            let first = try store.beginCommit(machine: machine)
            try first.setSize(volume: "disk", size: Int64(size))
            try old.withUnsafeBytes { try first.write(volume: "disk", offset: 0, bytes: $0) }
            _ = try first.commit()

            let second = try store.beginCommit(machine: machine)
            try second.reset(volume: "disk", size: Int64(size))
            model = [UInt8](repeating: 0, count: size)
            for (i, index) in [0, 2, 3, 5, 6].enumerated() {
                if usePut {
                    try put(second, &model, index: index, fresh[i])
                } else {
                    try apply(second, &model, volume: "disk", offset: index * segment, fresh[i])
                }
            }
            try apply(second, &model, volume: "disk", offset: 7 * segment + blockSize, partial)
            results.append(try second.commit())
            expectSameBytes(
                try f.exported(store, machine: machine, volume: "disk", point: "latest"),
                model,
                "\(machine): after the reset"
            )
        }
        #expect(try segmentEntries(store, results[0]) == (try segmentEntries(store, results[1])))
        #expect(results[0].changedBytes == results[1].changedBytes)
        #expect(results[1].storedBytes == 0, "the second machine's data is all in the store already")
        #expect(try store.verify().isClean)
        store.close()
    }

    @Test("an incompressible segment is kept plain and an all-zero one becomes a hole that reads as zeros")
    func incompressibleAndZero() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        var rng = SeededRandom(seed: 104)
        let random = rng.bytes(segment)
        let zeros = [UInt8](repeating: 0, count: segment)

        let first = try store.beginCommit(machine: "kinds")
        try first.setSize(volume: "disk", size: Int64(4 * segment))
        let plain = try prepare(first, random)
        #expect(!plain.compressed && !plain.isZero)
        let hole = try prepare(first, zeros)
        #expect(hole.isZero && hole.sealed == nil)
        // A frame of zeros is tiny, but zeros are never stored at all.
        #expect(senderFrame(zeros).count < 100)
        try first.putSegment(volume: "disk", index: 0, plain)
        try first.putSegment(volume: "disk", index: 1, hole)
        try first.putSegment(volume: "disk", index: 2, plain)  // the same prepared segment twice: one chunk
        let c1 = try first.commit()
        let e1 = try segmentEntries(store, c1)
        #expect(e1 == [.whole(plain.fingerprint), .hole, .whole(plain.fingerprint), .hole])
        #expect(c1.storedBytes >= UInt64(segment + sealOverhead) && c1.storedBytes < UInt64(2 * segment))
        var model = random + zeros + random + zeros
        expectSameBytes(try f.exported(store, machine: "kinds", volume: "disk", point: "latest"), model, "first point")

        // Zeros put over data make holes again; the data is still in the first point.
        let second = try store.beginCommit(machine: "kinds")
        try put(second, &model, index: 0, zeros)
        try put(second, &model, index: 3, zeros)
        let c2 = try second.commit()
        #expect(try segmentEntries(store, c2) == [.hole, .hole, .whole(plain.fingerprint), .hole])
        #expect(c2.changedBytes == UInt64(segment))
        let reader = try store.reader(machine: "kinds", volume: "disk", point: "latest")
        #expect(try read(reader, at: 0, count: segment) == zeros)
        expectSameBytes(try f.exported(store, machine: "kinds", volume: "disk", point: "latest"), model, "second point")
        expectSameBytes(
            try f.exported(store, machine: "kinds", volume: "disk", point: c1.id.description),
            random + zeros + random + zeros,
            "first point"
        )
        #expect(try store.verify().isClean)
        store.close()
    }

    @Test(
        "a put beyond the end, of a partial segment or into a volume without a size is refused; the commit goes on or is abandoned"
    )
    func refused() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        var rng = SeededRandom(seed: 105)
        let content = textSegment(&rng)

        let b = try store.beginCommit(machine: "edge")
        try b.setSize(volume: "disk", size: Int64(2 * segment + blockSize))  // two whole segments and a block
        let prepared = try prepare(b, content)
        for index in [2, 3, 1000, -1] {
            let error = expectError("store.beyond-end") { try b.putSegment(volume: "disk", index: index, prepared) }
            #expect(
                error?.message.contains("segment \(index)") == true && error?.message.contains("'disk'") == true,
                "\(String(describing: error))"
            )
        }
        let unknown = expectError("store.unknown-volume") { try b.putSegment(volume: "nosize", index: 0, prepared) }
        #expect(unknown?.message.contains("setSize") == true)
        expectError("store.misaligned") {
            _ = try [UInt8](repeating: 1, count: blockSize).withUnsafeBytes {
                try b.prepareSegment(content: Array(content[0..<blockSize]), frame: $0)
            }
        }
        expectError("store.misaligned") {
            _ = try senderFrame(content + content).withUnsafeBytes {
                try b.prepareSegment(content: content + content, frame: $0)
            }
        }
        // The refusals changed nothing: the valid put still lands and commits.
        var model = [UInt8](repeating: 0, count: 2 * segment + blockSize)
        try b.putSegment(volume: "disk", index: 1, prepared)
        model.replaceSubrange(segment..<(2 * segment), with: content)
        let c1 = try b.commit()
        expectSameBytes(
            try f.exported(store, machine: "edge", volume: "disk", point: "latest"),
            model,
            "after refusals"
        )
        expectError("store.commit-finished") { try b.putSegment(volume: "disk", index: 0, prepared) }

        // A refused put, then abandon: nothing of that commit is visible, and the next commit works.
        let abandoned = try store.beginCommit(machine: "edge")
        try abandoned.putSegment(volume: "disk", index: 0, try prepare(abandoned, rng.bytes(segment)))
        expectError("store.beyond-end") { try abandoned.putSegment(volume: "disk", index: 2, prepared) }
        abandoned.abandon()
        expectError("store.commit-finished") { try abandoned.putSegment(volume: "disk", index: 0, prepared) }
        #expect(store.commits(machine: "edge").map(\.id) == [c1.id])
        expectSameBytes(
            try f.exported(store, machine: "edge", volume: "disk", point: "latest"),
            model,
            "after the abandoned commit"
        )

        let next = try store.beginCommit(machine: "edge")
        #expect(next.parent == c1)
        try put(next, &model, index: 0, rng.bytes(segment))
        let c2 = try next.commit()
        #expect(c2.changedBytes == UInt64(segment))
        expectSameBytes(
            try f.exported(store, machine: "edge", volume: "disk", point: "latest"),
            model,
            "after the next commit"
        )
        #expect(try store.verify().isClean)
        store.close()
    }
}

/// Results filled in by concurrent workers, one slot each.
private final class PreparedSlots: @unchecked Sendable {
    private let lock = DispatchSemaphore(value: 1)
    private var slots: [Result<PreparedSegment, any Error>?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ i: Int, _ result: Result<PreparedSegment, any Error>) {
        lock.wait()
        slots[i] = result
        lock.signal()
    }

    func get(_ i: Int) -> Result<PreparedSegment, any Error> {
        lock.wait()
        defer { lock.signal() }
        return slots[i]!
    }
}
