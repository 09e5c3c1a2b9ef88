import LifeboatCore
import LifeboatTesting
import Testing

@testable import StagingStore

private let segment = 65536

/// 64 KiB of log-like text (compressible).
private func textSegment(_ rng: inout SeededRandom) -> [UInt8] {
    var slice = ArraySlice([UInt8](repeating: 0, count: segment))
    TestImage.fillText(&slice, rng: &rng)
    return Array(slice)
}

@Suite("Deferred compression: segments that arrive raw land plain and are compressed in the background")
struct DeferredCompressionTests {
    @Test("background compression keeps every point byte-identical, shrinks the packs, survives reopening, deletes retired packs after the grace")
    func compressLater() throws {
        let f = try StoreFixture()
        var store = try f.open(.write)
        var rng = SeededRandom(seed: 77)
        // 700 segments (43 MiB): the raw ones fill more than one 32 MiB pack.
        let segments = 700
        let size = segments * segment + 3000
        var kinds: [String] = []
        var model = [UInt8](repeating: 0, count: size)
        let builder = try store.beginCommit(machine: "m")
        try builder.setSize(volume: "disk", size: Int64(size))
        for i in 0..<segments {
            let content: [UInt8]
            switch i % 4 {
            case 0: content = rng.bytes(segment); kinds.append("random")
            case 1: content = [UInt8](repeating: 0, count: segment); kinds.append("zero")
            default: content = textSegment(&rng); kinds.append("text")
            }
            let prepared = try builder.prepareSegment(content: content)
            #expect(prepared.deferred == (kinds[i] != "zero"))
            #expect(!prepared.compressed)
            try builder.putSegment(volume: "disk", index: i, prepared)
            model.replaceSubrange((i * segment)..<((i + 1) * segment), with: content)
        }
        let tail = rng.bytes(3000)
        try tail.withUnsafeBytes { try builder.write(volume: "disk", offset: Int64(segments * segment), bytes: $0) }
        model.replaceSubrange((segments * segment)..<size, with: tail)
        let first = try builder.commit()

        // A second point changes a few blocks of deferred segments (stored as blocks, compressed at once).
        var model2 = model
        let second = try store.beginCommit(machine: "m")
        for i in [2, 3, 6, 400] {
            let block = rng.bytes(blockSize)
            let offset = i * segment + blockSize * (i % 16)
            try block.withUnsafeBytes { try second.write(volume: "disk", offset: Int64(offset), bytes: $0) }
            model2.replaceSubrange(offset..<(offset + blockSize), with: block)
        }
        let secondPoint = try second.commit()

        let dataSegments = kinds.count { $0 != "zero" }
        let textSegments = kinds.count { $0 == "text" }
        #expect(store.deferredBlobCount == dataSegments)
        let packsBefore = try store.stats().packBytes

        var rewritten = 0
        var compressed = 0
        var deferredHandled = 0
        var passes = 0
        while store.deferredBlobCount > 0 {
            let report = try store.compressDeferred(packLimit: 1, grace: .seconds(3600))
            #expect(report.packsRewritten == 1)
            #expect(report.bytesAfter < report.bytesBefore)
            rewritten += report.packsRewritten
            compressed += report.compressedBlobs
            deferredHandled += report.deferredBlobs
            passes += 1
            try #require(passes < 20, "background compression does not finish")
        }
        #expect(rewritten >= 2)
        #expect(deferredHandled == dataSegments)
        #expect(compressed == textSegments, "text compresses, random data stays plain")
        #expect(store.hasRetiredPacks)
        // Nothing left: a pass is a no-op.
        #expect(try store.compressDeferred(grace: .seconds(3600)).packsRewritten == 0)

        #expect(try f.exported(store, machine: "m", volume: "disk", point: first.id.description) == model)
        #expect(try f.exported(store, machine: "m", volume: "disk", point: secondPoint.id.description) == model2)
        let report = try store.verify()
        #expect(report.isClean, "\(report.problems)")

        // Reopened: the old packs are still on disk and listed by the first commit's index file; the copies win,
        // nothing is deferred, and the old packs are retired again.
        store.close()
        store = try f.open(.write)
        #expect(store.deferredBlobCount == 0)
        #expect(store.hasRetiredPacks)
        #expect(try f.exported(store, machine: "m", volume: "disk", point: first.id.description) == model)

        // After the grace period the retired packs go, and the store is smaller than before.
        let deletion = try store.compressDeferred(grace: .zero)
        #expect(deletion.packsDeleted == rewritten)
        #expect(!store.hasRetiredPacks)
        let packsAfter = try store.stats().packBytes
        print("deferred compression: packs \(packsBefore) → \(packsAfter) bytes, \(rewritten) packs rewritten in \(passes) passes")
        #expect(packsAfter * 10 < packsBefore * 8, "text is 2/3 of the data and compresses about 3×")

        // Reopened once more without the old packs: every point reads back, verify is clean.
        store.close()
        store = try f.open(.write)
        #expect(store.deferredBlobCount == 0)
        #expect(!store.hasRetiredPacks)
        #expect(try f.exported(store, machine: "m", volume: "disk", point: first.id.description) == model)
        #expect(try f.exported(store, machine: "m", volume: "disk", point: secondPoint.id.description) == model2)
        let final = try store.verify()
        #expect(final.isClean, "\(final.problems)")
        store.close()
    }

    @Test("background compression waits for a commit in progress and needs write access")
    func turnsAndAccess() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        let builder = try store.beginCommit(machine: "m")
        try builder.setSize(volume: "disk", size: Int64(4 * segment))
        var rng = SeededRandom(seed: 5)
        try builder.putSegment(volume: "disk", index: 0, try builder.prepareSegment(content: textSegment(&rng)))
        expectError("store.commit-in-progress") { _ = try store.compressDeferred() }
        let point = try builder.commit()
        // A commit cannot start while compression holds the turn: compressDeferred returns before anyone can
        // tell, so check the reverse order through the flag it takes.
        #expect(store.deferredBlobCount == 1)
        #expect(try store.compressDeferred(grace: .zero).compressedBlobs == 1)
        #expect(store.deferredBlobCount == 0)
        store.close()

        let reader = try f.open(.read)
        expectError("store.read-only") { _ = try reader.compressDeferred() }
        #expect(try f.exported(reader, machine: "m", volume: "disk", point: point.id.description).count == 4 * segment)
        reader.close()
    }

    @Test("a wrong-sized raw segment is refused and changes nothing")
    func badRawSegment() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        let builder = try store.beginCommit(machine: "m")
        expectError("store.misaligned") { _ = try builder.prepareSegment(content: [UInt8](repeating: 1, count: segment - 1)) }
        builder.abandon()
        #expect(store.deferredBlobCount == 0)
        store.close()
    }
}
