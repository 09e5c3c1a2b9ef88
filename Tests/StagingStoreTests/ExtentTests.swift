import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

/// Writes an extent to both the builder and the in-memory model.
func apply(_ builder: CommitBuilder, _ model: inout [UInt8], volume: String, offset: Int, _ bytes: [UInt8]) throws {
    try bytes.withUnsafeBytes { try builder.write(volume: volume, offset: Int64(offset), bytes: $0) }
    model.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
}

@Suite("Extent API: beginCommit, setSize, write")
struct ExtentTests {
    @Test("aligned extents, repeated writes to one segment and a partial last block read back as the model")
    func extentsMatchModel() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        let size = 9 * MiB + 1000  // not a multiple of 4096
        var model = [UInt8](repeating: 0, count: size)
        var rng = SeededRandom(seed: 6)

        let builder = try store.beginCommit(machine: "vm-1")
        #expect(builder.size(of: "disk") == nil)
        try builder.setSize(volume: "disk", size: Int64(size))
        try apply(builder, &model, volume: "disk", offset: 0, rng.bytes(8192))
        try apply(builder, &model, volume: "disk", offset: 3 * blockSize, rng.bytes(blockSize))  // same segment again
        try apply(builder, &model, volume: "disk", offset: blockSize, rng.bytes(blockSize))  // overwrites part of the first
        try apply(builder, &model, volume: "disk", offset: 4 * MiB - 65536, rng.bytes(2 * 65536 + blockSize))  // across a leaf
        try apply(builder, &model, volume: "disk", offset: 65536 - blockSize, [UInt8](repeating: 0x41, count: 2 * blockSize))
        var text = ArraySlice([UInt8](repeating: 0, count: 5 * 65536))
        TestImage.fillText(&text, rng: &rng)
        try apply(builder, &model, volume: "disk", offset: 6 * MiB, Array(text))  // compressible, whole segments
        try apply(builder, &model, volume: "disk", offset: 9 * MiB - 2 * blockSize, rng.bytes(2 * blockSize + 1000))  // ends at the size
        try apply(builder, &model, volume: "disk", offset: 9 * MiB, rng.bytes(1000))  // the partial last block alone

        // Refused extents change nothing.
        let misaligned: [(Int, Int)] = [(100, 4096), (4096, 4095), (4096, 1), (-4096, 4096), (2048, 2048)]
        for (offset, count) in misaligned {
            expectError("store.misaligned") {
                try [UInt8](repeating: 0xEE, count: count).withUnsafeBytes {
                    try builder.write(volume: "disk", offset: Int64(offset), bytes: $0)
                }
            }
        }
        let beyond: [(Int, Int)] = [(9 * MiB, 4096), (9 * MiB + 4096, 4096), (10 * MiB, 4096), (9 * MiB - 4096, 8192)]
        for (offset, count) in beyond {
            expectError("store.beyond-end") {
                try [UInt8](repeating: 0xEE, count: count).withUnsafeBytes {
                    try builder.write(volume: "disk", offset: Int64(offset), bytes: $0)
                }
            }
        }
        expectError("store.unknown-volume") {
            try [UInt8](repeating: 1, count: 4096).withUnsafeBytes { try builder.write(volume: "nosize", offset: 0, bytes: $0) }
        }
        expectError("name.invalid") { try builder.setSize(volume: "bad/name", size: 4096) }

        let c1 = try builder.commit()
        #expect(c1.volumes.map(\.name) == ["disk"])
        #expect(c1.volumes.first?.size == Int64(size))
        #expect(c1.changedBytes == UInt64(nonZeroBlocks(model) * blockSize))
        let reader = try store.reader(machine: "vm-1", volume: "disk", point: "latest")
        expectSameBytes(try read(reader, at: 0, count: size), model, "volume after the first commit")
        expectSameBytes(try f.exported(store, machine: "vm-1", volume: "disk", point: "latest"), model, "export after the first commit")

        // A finished builder refuses more work.
        expectError("store.commit-finished") {
            try [UInt8](repeating: 1, count: 4096).withUnsafeBytes { try builder.write(volume: "disk", offset: 0, bytes: $0) }
        }
        expectError("store.commit-finished") { _ = try builder.commit() }

        // A second commit on top: small changes inside existing data, a zeroed block, growth.
        let first = model
        let b2 = try store.beginCommit(machine: "vm-1")
        #expect(b2.parent == c1)
        try apply(b2, &model, volume: "disk", offset: 2 * blockSize, rng.bytes(blockSize))
        try apply(b2, &model, volume: "disk", offset: 0, [UInt8](repeating: 0, count: blockSize))
        try apply(b2, &model, volume: "disk", offset: 6 * MiB + 65536 + blockSize, rng.bytes(blockSize))
        try apply(b2, &model, volume: "disk", offset: 3 * blockSize, Array(first[(3 * blockSize)..<(4 * blockSize)]))  // same bytes
        let newSize = 12 * MiB + 1
        try b2.setSize(volume: "disk", size: Int64(newSize))
        model += [UInt8](repeating: 0, count: newSize - size)
        try apply(b2, &model, volume: "disk", offset: 11 * MiB, rng.bytes(blockSize))
        try apply(b2, &model, volume: "disk", offset: 12 * MiB, [0x99])
        f.clock.advance(seconds: 5)
        let c2 = try b2.commit()
        var grownFirst = first
        grownFirst += [UInt8](repeating: 0, count: newSize - size)
        #expect(c2.changedBytes == UInt64(changedBlocks(grownFirst, model) * blockSize))
        #expect(c2.changedBytes == UInt64(5 * blockSize))
        let r2 = try store.reader(machine: "vm-1", volume: "disk", point: "latest")
        expectSameBytes(try read(r2, at: 0, count: newSize), model, "volume after the second commit")
        let r1 = try store.reader(machine: "vm-1", volume: "disk", point: c1.id.description)
        expectSameBytes(try read(r1, at: 0, count: size), first, "first point after the second commit")
        store.close()

        let ro = try f.open(.read)
        expectSameBytes(try f.exported(ro, machine: "vm-1", volume: "disk", point: "latest"), model, "export after reopen")
        #expect(try ro.verify().isClean)
        ro.close()
    }

    @Test("extent writes after a scan of the same volume in one commit")
    func scanThenWrite() throws {
        let f = try StoreFixture()
        var image = TestImage.mixed(size: 3 * MiB, seed: 61)
        let path = try f.writeImage("disk.img", image)
        let store = try f.open(.write)
        var rng = SeededRandom(seed: 62)

        let builder = try store.beginCommit(machine: "mix")
        try builder.scan(volume: "disk", path: path)
        try apply(builder, &image, volume: "disk", offset: 65536 + blockSize, rng.bytes(blockSize))
        try apply(builder, &image, volume: "disk", offset: 2 * MiB, rng.bytes(3 * blockSize))
        let commit = try builder.commit()
        #expect(commit.volumes.first?.size == Int64(3 * MiB))
        expectSameBytes(try f.exported(store, machine: "mix", volume: "disk", point: "latest"), image, "scan then write")
        store.close()
    }

    @Test("a scan after extent writes of the same volume in one commit takes the file's content")
    func writeThenScan() throws {
        let f = try StoreFixture()
        let image = TestImage.mixed(size: 3 * MiB, seed: 63)
        let path = try f.writeImage("disk.img", image)
        let store = try f.open(.write)
        _ = try store.ingest(machine: "mix", volumes: [(name: "disk", path: path)])
        var rng = SeededRandom(seed: 64)
        var other = [UInt8](repeating: 0, count: 1 * MiB)

        let builder = try store.beginCommit(machine: "mix")
        try builder.setSize(volume: "other", size: Int64(1 * MiB))
        try apply(builder, &other, volume: "other", offset: 8192, rng.bytes(blockSize))
        var scratch = image
        try apply(builder, &scratch, volume: "disk", offset: 0, rng.bytes(4 * blockSize))
        try builder.scan(volume: "disk", path: path)  // the file wins over the pending extents
        let commit = try builder.commit()
        #expect(commit.volumes.map(\.name) == ["disk", "other"])
        // Only the one block of "other" differs from the parent; the overwritten extents of "disk" do not count.
        #expect(commit.changedBytes == UInt64(blockSize))
        expectSameBytes(try f.exported(store, machine: "mix", volume: "disk", point: "latest"), image, "disk")
        expectSameBytes(try f.exported(store, machine: "mix", volume: "other", point: "latest"), other, "other")
        store.close()
    }

    @Test("more pending extents than the memory bound are folded mid-commit and still read back")
    func manyPendingSegments() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        let size = 144 * MiB  // 2304 segments: more than the 128 MiB pending bound
        let builder = try store.beginCommit(machine: "busy")
        try builder.setSize(volume: "disk", size: Int64(size))
        var rng = SeededRandom(seed: 65)
        var expected: [Int: [UInt8]] = [:]  // block index -> content
        for segment in 0..<(size / 65536) {
            let block = segment * 16 + segment % 16
            let bytes = rng.bytes(blockSize)
            try bytes.withUnsafeBytes { try builder.write(volume: "disk", offset: Int64(block * blockSize), bytes: $0) }
            expected[block] = bytes
        }
        // Rewrite blocks of segments that were folded early: other blocks (0, 1, 2, 100), and in segment 3
        // the very block written before the fold (it still differs from the parent once, not twice).
        for segment in [0, 1, 2, 3, 100] {
            let block = segment == 3 ? segment * 16 + segment % 16 : segment * 16 + 15 - segment % 16
            let bytes = rng.bytes(blockSize)
            try bytes.withUnsafeBytes { try builder.write(volume: "disk", offset: Int64(block * blockSize), bytes: $0) }
            expected[block] = bytes
        }
        let commit = try builder.commit()
        #expect(commit.changedBytes == UInt64(expected.count * blockSize))
        #expect(expected.count == size / 65536 + 4)
        let reader = try store.reader(machine: "busy", volume: "disk", point: "latest")
        for (block, bytes) in expected.sorted(by: { $0.key < $1.key }) {
            let got = try read(reader, at: Int64(block * blockSize), count: blockSize)
            if got != bytes {
                Issue.record("block \(block) differs")
                break
            }
        }
        expectSameBytes(try read(reader, at: Int64(65536 + blockSize * 8), count: blockSize), [UInt8](repeating: 0, count: blockSize), "an unwritten block")
        store.close()
    }
}
