import Foundation
import LifeboatCore
import LifeboatTesting
import Recovery
import StagingStore
import Testing

@Suite("Copy-on-write overlay exports")
struct OverlayTests {
    /// Runs qemu-io commands against a URI and records an issue if any fails.
    func qemuIO(_ uri: String, _ commands: [String], sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        var args = ["-f", "raw"]
        for c in commands { args += ["-c", c] }
        args.append(uri)
        let r = try run("/usr/bin/qemu-io", args, sourceLocation: sourceLocation)
        let output = r.stdout + r.stderr
        #expect(
            !output.contains("fail") && !output.contains("error"),
            "qemu-io \(commands): \(output)",
            sourceLocation: sourceLocation
        )
    }

    /// The whole export through qemu-img convert (a fresh connection).
    func contents(_ uri: String, _ f: NBDFixture) throws -> [UInt8] {
        let out = f.path("contents-\(UInt32.random(in: 0...UInt32.max)).raw")
        try run("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, out])
        defer { try? FileTools.removeFile(out) }
        return try FileTools.read(out)
    }

    @Test("writes land in the overlay, survive a restart, and never touch the staging store")
    func writeRestartDiscard() async throws {
        let f = try NBDFixture()
        let overlayDir = f.path("instance-1")
        var overlay = try OverlayExport(name: "rw", base: try f.pointExport(name: "base"), directory: overlayDir)
        try f.server.register(overlay)
        try f.server.register(try f.pointExport(name: "point"))
        try await f.server.start()
        let size = NBDFixture.imageSize
        var expected = f.image

        try qemuIO(f.uri("rw"), ["write -P 0xab 4096 8192"])
        for i in 4096..<12288 { expected[i] = 0xAB }
        try qemuIO(f.uri("rw"), ["read -P 0xab 4096 8192"])
        // Unaligned writes inside and across blocks, the partial last block, zeroes and a discard.
        try qemuIO(f.uri("rw"), ["write -P 0xcd 100 50", "write -P 0xee 20000 10000", "write -P 0x11 \(size - 700) 700"])
        for i in 100..<150 { expected[i] = 0xCD }
        for i in 20000..<30000 { expected[i] = 0xEE }
        for i in (size - 700)..<size { expected[i] = 0x11 }
        try qemuIO(f.uri("rw"), ["write -z 65536 131072", "discard 327680 65536", "write -z 1000 3000"])
        for i in 65536..<(65536 + 131072) { expected[i] = 0 }
        for i in 327680..<(327680 + 65536) { expected[i] = 0 }
        for i in 1000..<4000 { expected[i] = 0 }
        try qemuIO(f.uri("rw"), ["read -P 0xcd 100 50", "read -P 0 1000 3000", "read -P 0x11 \(size - 700) 700"])
        expectSameBytes(try contents(f.uri("rw"), f), expected, "overlay after writes")
        #expect(overlay.changedBlocks > 0)

        // The overlay's block status shows the zeroed range as a hole.
        let map = try run("/usr/bin/qemu-img", ["map", "--output=json", "-f", "raw", f.uri("rw")])
        let entries = try JSONSerialization.jsonObject(with: Data(map.stdout.utf8)) as? [[String: Any]] ?? []
        let zeroed = entries.first { ($0["start"] as? Int ?? -1) <= 65536 && ($0["start"] as? Int ?? 0) + ($0["length"] as? Int ?? 0) >= 65536 + 131072 }
        #expect(zeroed?["zero"] as? Bool == true && zeroed?["data"] as? Bool == false, "zeroed range: \(map.stdout)")

        // qemu-io flushed before it disconnected: the files alone (as after a crash) hold the writes.
        let peek = try OverlayExport(name: "peek", base: try f.pointExport(name: "base"), directory: overlayDir)
        var flushed = [UInt8](repeating: 0, count: 8192)
        try flushed.withUnsafeMutableBytes { try peek.read(at: 4096, into: $0) }
        #expect(flushed == [UInt8](repeating: 0xAB, count: 8192))
        try peek.close()

        // The point itself is unchanged.
        expectSameBytes(try contents(f.uri("point"), f), f.image, "the read-only point while the overlay is written")

        // Restart: a new server and a reopened overlay read the same.
        try await f.server.close()
        try overlay.close()
        overlay = try OverlayExport(name: "rw", base: try f.pointExport(name: "base"), directory: overlayDir)
        f.server = try NBDServer(logger: NBDFixture.logger)
        try f.server.register(overlay)
        try await f.server.start()
        try qemuIO(f.uri("rw"), ["read -P 0xab 4096 8192"])
        expectSameBytes(try contents(f.uri("rw"), f), expected, "overlay after a restart")

        // The staging store never saw a write.
        expectSameBytes(try FileTools.read(try f.exportedImage()), f.image, "store export after overlay writes")
        let report = try f.store.verify()
        #expect(report.problems.isEmpty, "verify: \(report.problems)")

        // Terminating the instance discards its overlay.
        _ = f.server.unregister(name: "rw")
        try overlay.discard()
        #expect(!FileTools.exists(overlayDir + "/overlay.data"))
        #expect(!FileTools.exists(overlayDir + "/overlay.map"))
        let fresh = try OverlayExport(name: "rw", base: try f.pointExport(name: "base"), directory: overlayDir)
        #expect(fresh.changedBlocks == 0)
        try fresh.discard()
        try await f.close()
    }

    @Test("nbdcopy into an overlay export with many requests in flight, then read back")
    func copyInto() async throws {
        let f = try NBDFixture()
        let overlay = try OverlayExport(name: "rw", base: try f.pointExport(name: "base"), directory: f.path("ov"))
        try f.server.register(overlay)
        try await f.server.start()
        var rng = SeededRandom(seed: 99)
        let replacement = rng.bytes(NBDFixture.imageSize)
        let source = f.path("replacement.raw")
        try FileTools.write(source, replacement)
        try run("/usr/bin/nbdcopy", ["--requests=16", "--request-size=1048576", source, f.uri("rw")])
        expectSameBytes(try contents(f.uri("rw"), f), replacement, "overlay after nbdcopy")
        let compare = try run("/usr/bin/qemu-img", ["compare", "-f", "raw", "-F", "raw", f.uri("rw"), source])
        #expect(compare.status == 0)
        try overlay.close()
        expectSameBytes(try FileTools.read(try f.exportedImage()), f.image, "store export after nbdcopy into the overlay")
        try await f.close()
    }

    @Test("a damaged or mismatched overlay map is an error, not silent data loss")
    func damagedMap() throws {
        let f = try NBDFixture()
        let dir = f.path("ov")
        let overlay = try OverlayExport(name: "rw", base: try f.pointExport(), directory: dir)
        let bytes = [UInt8](repeating: 0x42, count: 8192)
        try bytes.withUnsafeBytes { try overlay.write(at: 4096, from: $0) }
        try overlay.close()

        let mapPath = dir + "/overlay.map"
        let good = try FileTools.read(mapPath)
        try FileTools.flipByte(mapPath, at: 40)
        #expect(throws: LifeboatError.self) { _ = try OverlayExport(name: "rw", base: try f.pointExport(), directory: dir) }
        do {
            _ = try OverlayExport(name: "rw", base: try f.pointExport(), directory: dir)
        } catch let error as LifeboatError {
            #expect(error.code == "recovery.overlay-damaged")
        }
        try FileTools.write(mapPath, Array(good.prefix(20)))
        #expect(throws: LifeboatError.self) { _ = try OverlayExport(name: "rw", base: try f.pointExport(), directory: dir) }
        try FileTools.removeFile(mapPath)
        #expect(throws: LifeboatError.self) { _ = try OverlayExport(name: "rw", base: try f.pointExport(), directory: dir) }

        // Intact again: the write is there.
        try FileTools.write(mapPath, good)
        let reopened = try OverlayExport(name: "rw", base: try f.pointExport(), directory: dir)
        var back = [UInt8](repeating: 0, count: 8192)
        try back.withUnsafeMutableBytes { try reopened.read(at: 4096, into: $0) }
        #expect(back == bytes)
        try reopened.close()
        f.store.close()
    }

    @Test("overlay block status: written data, zeroed holes, and the base's holes")
    func blockStatus() throws {
        let f = try NBDFixture()
        let base = try f.pointExport()
        let overlay = try OverlayExport(name: "rw", base: base, directory: f.path("ov"))
        let size = base.size
        #expect(try overlay.blockStatus(at: 0, length: size) == base.blockStatus(at: 0, length: size))
        try overlay.writeZeroes(at: 0, length: 65536)
        let bytes = [UInt8](repeating: 1, count: 4096)
        try bytes.withUnsafeBytes { try overlay.write(at: 8192, from: $0) }
        let status = try overlay.blockStatus(at: 0, length: 65536)
        #expect(
            status == [
                NBDExtent(length: 8192, flags: 3), NBDExtent(length: 4096, flags: 0), NBDExtent(length: 65536 - 12288, flags: 3),
            ]
        )
        let total = try overlay.blockStatus(at: 0, length: size).reduce(Int64(0)) { $0 + Int64($1.length) }
        #expect(total == size)
        try overlay.discard()
        f.store.close()
    }
}
