import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

/// A 1 MiB image that is zero except segment `segment`, which holds `data` (64 KiB).
private func sparseImage(_ data: [UInt8], segment: Int = 5) -> [UInt8] {
    var image = [UInt8](repeating: 0, count: 1 * MiB)
    image.replaceSubrange((segment * 65536)..<((segment + 1) * 65536), with: data)
    return image
}

private func baseName(_ path: String) -> String {
    String(path.split(separator: "/").last ?? "")
}

/// A pack holding one random 64 KiB chunk and one small map leaf: the header (8 bytes), then the chunk
/// sealed (12-byte nonce, 65536 bytes, 16-byte tag), then the leaf, the directory and the footer.
private let packHeader = 8
private let sealedChunk = 12 + 65536 + 16

@Suite("Integrity: damage is detected and located")
struct IntegrityTests {
    @Test("a flipped byte in a data chunk is reported with machine, volume, point and offset")
    func flippedDataByte() throws {
        let f = try StoreFixture()
        var rng = SeededRandom(seed: 7)
        let store = try f.open(.write)
        let path = f.path("disk.img")

        let image1 = sparseImage(rng.bytes(65536))
        try FileTools.write(path, image1)
        let c1 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: path)])
        let packsBefore = try f.files.packs()

        // The second point rewrites segment 5 with new random data: its own chunk, in its own pack.
        let image2 = sparseImage(rng.bytes(65536))
        try FileTools.write(path, image2)
        f.clock.advance(seconds: 60)
        let c2 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: path)])
        let newPacks = try f.files.packs().subtracting(packsBefore)
        try #require(newPacks.count == 1)
        let pack = newPacks.first!
        let packSize = try FileTools.size(pack)
        #expect(packSize > Int64(packHeader + sealedChunk) && packSize < Int64(packHeader + sealedChunk + 8192))

        // Another machine with its own data.
        let image3 = sparseImage(rng.bytes(65536), segment: 2)
        let betaPath = try f.writeImage("beta.img", image3)
        f.clock.advance(seconds: 60)
        let c3 = try store.ingest(machine: "beta", volumes: [(name: "disk", path: betaPath)])
        #expect(try store.verify().isClean)
        store.close()

        // Damage the middle of c2's chunk.
        try FileTools.flipByte(pack, at: Int64(packHeader + sealedChunk / 2))

        let ro = try f.open(.read)
        let report = try ro.verify()
        #expect(!report.isClean)
        #expect(report.pointsChecked == 3)
        #expect(report.blobsChecked > 0 && report.bytesRead > 65536)
        #expect(
            report.problems.contains { $0.contains(baseName(pack)) && $0.contains("data chunk") },
            "problems: \(report.problems)"
        )
        #expect(report.affected.count == 1)
        if let a = report.affected.first {
            #expect(a.machine == "alpha")
            #expect(a.volume == "disk")
            #expect(a.point == c2.id)
            #expect(a.time == c2.time)
            #expect(a.firstOffset == Int64(5 * 65536))
            #expect(a.damagedBytes == 65536)
        }
        // The newest intact point of each machine.
        #expect(report.cleanPoints == ["alpha": c1.id, "beta": c3.id])

        // Reading the damaged range says where the damage is.
        let reader = try ro.reader(machine: "alpha", volume: "disk", point: c2.id.description)
        let offset = Int64(5 * 65536 + 100)
        let error = expectError("store.corrupt") { _ = try read(reader, at: offset, count: 10) }
        for part in ["alpha", "disk", c2.id.description, "\(offset)"] {
            #expect(error?.message.contains(part) == true, "'\(part)' missing from: \(error?.message ?? "")")
        }
        // The rest of that point still reads.
        expectSameBytes(try read(reader, at: 0, count: 5 * 65536), Array(image2[0..<(5 * 65536)]), "undamaged start")
        expectSameBytes(try read(reader, at: Int64(6 * 65536), count: MiB - 6 * 65536), Array(image2[(6 * 65536)...]), "undamaged end")

        // Export of the damaged point fails the same way and leaves no file behind.
        let out = f.path("damaged.img")
        let exportError = expectError("store.corrupt") { try ro.export(reader, to: out) }
        for part in ["alpha", "disk", c2.id.description, "\(5 * 65536)"] {
            #expect(exportError?.message.contains(part) == true, "'\(part)' missing from: \(exportError?.message ?? "")")
        }
        #expect(!FileTools.exists(out))
        #expect(!FileTools.exists(out + ".partial"))

        // Points that do not reference the damaged chunk are intact.
        expectSameBytes(try f.exported(ro, machine: "alpha", volume: "disk", point: c1.id.description), image1, "older point")
        expectSameBytes(try f.exported(ro, machine: "beta", volume: "disk", point: "latest"), image3, "other machine")
        ro.close()
    }

    @Test("a truncated pack is reported and the points that need it are named")
    func truncatedPack() throws {
        let f = try StoreFixture()
        var rng = SeededRandom(seed: 71)
        let store = try f.open(.write)
        let image1 = sparseImage(rng.bytes(65536))
        let path = try f.writeImage("a.img", image1)
        let c1 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: path)])
        let alphaPacks = try f.files.packs()
        try #require(alphaPacks.count == 1)
        let image2 = sparseImage(rng.bytes(65536), segment: 9)
        let betaPath = try f.writeImage("b.img", image2)
        f.clock.advance(seconds: 60)
        let c2 = try store.ingest(machine: "beta", volumes: [(name: "disk", path: betaPath)])
        store.close()

        let pack = alphaPacks.first!
        try FileTools.truncate(pack, to: try FileTools.size(pack) / 2)

        let ro = try f.open(.read)
        let report = try ro.verify()
        #expect(!report.isClean)
        #expect(report.problems.contains { $0.contains(baseName(pack)) }, "problems: \(report.problems)")
        #expect(report.affected.contains { $0.machine == "alpha" && $0.volume == "disk" && $0.point == c1.id && $0.damagedBytes > 0 })
        #expect(!report.affected.contains { $0.machine == "beta" })
        #expect(report.cleanPoints["alpha"] == nil)
        #expect(report.cleanPoints["beta"] == c2.id)

        let reader = try ro.reader(machine: "alpha", volume: "disk", point: "latest")
        let error = expectError("store.corrupt") { _ = try read(reader, at: Int64(5 * 65536), count: 65536) }
        for part in ["alpha", "disk", c1.id.description] {
            #expect(error?.message.contains(part) == true, "'\(part)' missing from: \(error?.message ?? "")")
        }
        expectSameBytes(try f.exported(ro, machine: "beta", volume: "disk", point: "latest"), image2, "other machine")
        ro.close()
    }

    @Test("a damaged index file or commit record does not stop open; verify reports both")
    func damagedMetadata() throws {
        let f = try StoreFixture()
        var rng = SeededRandom(seed: 72)
        let store = try f.open(.write)
        let alpha1 = sparseImage(rng.bytes(65536))
        let alphaPath = try f.writeImage("a.img", alpha1)
        let c1 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: alphaPath)])

        let indexBefore = try f.files.indexFiles()
        let packsBefore = try f.files.packs()
        let beta = sparseImage(rng.bytes(65536), segment: 3)
        let betaPath = try f.writeImage("b.img", beta)
        f.clock.advance(seconds: 60)
        let c2 = try store.ingest(machine: "beta", volumes: [(name: "disk", path: betaPath)])
        let betaIndex = try f.files.indexFiles().subtracting(indexBefore)
        let betaPacks = try f.files.packs().subtracting(packsBefore)
        try #require(betaIndex.count == 1 && betaPacks.count == 1)

        var alpha2 = alpha1
        alpha2.replaceSubrange((7 * 65536)..<(8 * 65536), with: rng.bytes(65536))
        try FileTools.write(alphaPath, alpha2)
        f.clock.advance(seconds: 60)
        let c3 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: alphaPath)])
        store.close()

        let indexFile = betaIndex.first!
        try FileTools.flipByte(indexFile, at: try FileTools.size(indexFile) / 2)
        let commitFile = f.root + "/commits/" + c3.id.description
        #expect(FileTools.exists(commitFile))
        try FileTools.flipByte(commitFile, at: try FileTools.size(commitFile) / 2)

        // Open still works, for reading and for writing.
        let writer = try f.open(.write)
        writer.close()
        let ro = try f.open(.read)
        #expect(ro.commits(machine: "alpha") == [c1])
        #expect(ro.commits(machine: "beta") == [c2])
        expectError("store.unknown-point") { _ = try ro.resolvePoint(c3.id.description, machine: "alpha") }

        let report = try ro.verify()
        #expect(!report.isClean)
        #expect(report.problems.contains { $0.contains("index/" + baseName(indexFile)) }, "problems: \(report.problems)")
        #expect(report.problems.contains { $0.contains("commits/" + c3.id.description) }, "problems: \(report.problems)")
        // Beta's map lived in the pack the damaged index described.
        #expect(report.affected.contains { $0.machine == "beta" && $0.point == c2.id })
        #expect(!report.affected.contains { $0.machine == "alpha" })
        #expect(report.cleanPoints["alpha"] == c1.id)
        #expect(report.cleanPoints["beta"] == nil)

        let reader = try ro.reader(machine: "beta", volume: "disk", point: "latest")
        let error = expectError("store.missing-blob") { _ = try read(reader, at: 4096, count: 4096) }
        for part in ["beta", "disk", c2.id.description, "4096"] {
            #expect(error?.message.contains(part) == true, "'\(part)' missing from: \(error?.message ?? "")")
        }
        expectSameBytes(try f.exported(ro, machine: "alpha", volume: "disk", point: "latest"), alpha1, "alpha's intact point")
        ro.close()

        // Garbage collection must not take the pack the damaged index described for garbage.
        let maintenance = try f.open(.maintenance)
        expectError("store.gc-blocked") { _ = try maintenance.prune(policy: .default) }
        maintenance.close()
        #expect(FileTools.exists(betaPacks.first!))
    }

    @Test("damage to one changed 4 KiB block is located to that block")
    func damagedSmallChange() throws {
        let f = try StoreFixture()
        var rng = SeededRandom(seed: 73)
        var image = sparseImage(rng.bytes(65536), segment: 9)
        let path = try f.writeImage("disk.img", image)
        let store = try f.open(.write)
        let c1 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: path)])
        let packsBefore = try f.files.packs()

        // One random 4 KiB block inside segment 9: a small chunk, then the leaf, in the new pack.
        let blockOffset = 9 * 65536 + 3 * blockSize
        image.replaceSubrange(blockOffset..<(blockOffset + blockSize), with: rng.bytes(blockSize))
        try FileTools.write(path, image)
        f.clock.advance(seconds: 60)
        let c2 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: path)])
        #expect(c2.changedBytes == UInt64(blockSize))
        let newPacks = try f.files.packs().subtracting(packsBefore)
        try #require(newPacks.count == 1)
        let pack = newPacks.first!
        #expect(try FileTools.size(pack) < Int64(packHeader + 12 + blockSize + 16 + 4096))
        store.close()

        try FileTools.flipByte(pack, at: Int64(packHeader + 12 + blockSize / 2))
        let ro = try f.open(.read)
        let report = try ro.verify()
        #expect(report.problems.contains { $0.contains(baseName(pack)) && $0.contains("data chunk") }, "\(report.problems)")
        #expect(report.affected.count == 1)
        if let a = report.affected.first {
            #expect(a.machine == "alpha" && a.volume == "disk" && a.point == c2.id && a.time == c2.time)
            #expect(a.firstOffset == Int64(blockOffset))
            #expect(a.damagedBytes == Int64(blockSize))
        }
        #expect(report.cleanPoints == ["alpha": c1.id])
        let reader = try ro.reader(machine: "alpha", volume: "disk", point: "latest")
        let error = expectError("store.corrupt") { _ = try read(reader, at: Int64(blockOffset), count: blockSize) }
        #expect(error?.message.contains("offset \(blockOffset)") == true, "\(error?.message ?? "")")
        // Segments that do not use the damaged chunk still read.
        expectSameBytes(try read(reader, at: 0, count: 9 * 65536), Array(image[0..<(9 * 65536)]), "before the damaged segment")
        ro.close()
    }

    @Test("a pack that disappeared is reported with the points it takes")
    func missingPack() throws {
        let f = try StoreFixture()
        var rng = SeededRandom(seed: 74)
        let store = try f.open(.write)
        let image1 = sparseImage(rng.bytes(65536))
        let path = try f.writeImage("a.img", image1)
        let c1 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: path)])
        let packs1 = try f.files.packs()
        let image2 = sparseImage(rng.bytes(65536), segment: 11)
        try FileTools.write(path, image2)
        f.clock.advance(seconds: 60)
        let c2 = try store.ingest(machine: "alpha", volumes: [(name: "disk", path: path)])
        let packs2 = try f.files.packs().subtracting(packs1)
        try #require(packs2.count == 1)
        store.close()

        try FileTools.removeFile(packs2.first!)
        let ro = try f.open(.read)
        let report = try ro.verify()
        #expect(report.problems.contains { $0.contains(baseName(packs2.first!)) && $0.contains("missing") }, "\(report.problems)")
        #expect(report.affected.map(\.point) == [c2.id])
        #expect(report.cleanPoints == ["alpha": c1.id])
        let reader = try ro.reader(machine: "alpha", volume: "disk", point: "latest")
        do {
            _ = try read(reader, at: Int64(11 * 65536), count: 100)
            Issue.record("reading a point whose pack is gone did not fail")
        } catch let error as LifeboatError {
            for part in ["alpha", "disk", c2.id.description, "\(11 * 65536)"] {
                #expect(error.message.contains(part), "'\(part)' missing from: \(error.message)")
            }
        }
        expectSameBytes(try f.exported(ro, machine: "alpha", volume: "disk", point: c1.id.description), image1, "older point")
        ro.close()
    }
}
