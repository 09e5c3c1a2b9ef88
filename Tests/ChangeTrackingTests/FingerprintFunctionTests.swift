import ChangeTracking
import Crypto
import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// Which function fingerprints a volume's blocks is recorded in its map: new maps use AES-256-GMAC under a key of
/// their own; a map of format 1 (SHA-256 prefixes, before the keyed function existed) keeps working — an agent
/// upgraded over it sends only what changed — until a rescan starts a new map.
@Suite("Fingerprint functions")
struct FingerprintFunctionTests {
    /// Rewrites a tracker's map as format 1 wrote it: version 1, bytes 20..<24 and 64..<96 zero, the first 16 bytes
    /// of SHA-256 of each block, and the checksum over the header and the fingerprints.
    static func rewriteAsFormat1(_ mapPath: String, volumeBytes: [UInt8]) throws {
        var map = try FileTools.read(mapPath)
        map.replaceSubrange(8..<12, with: [1, 0, 0, 0])
        map.replaceSubrange(20..<24, with: [0, 0, 0, 0])
        map.replaceSubrange(64..<96, with: [UInt8](repeating: 0, count: 32))
        var fingerprints: [UInt8] = []
        var offset = 0
        while offset < volumeBytes.count {
            var blockBytes = Array(volumeBytes[offset..<min(offset + block, volumeBytes.count)])
            blockBytes += [UInt8](repeating: 0, count: block - blockBytes.count)
            fingerprints += Array(SHA256.hash(data: blockBytes)).prefix(16)
            offset += block
        }
        try #require(map.count == 128 + fingerprints.count)
        var hasher = SHA256()
        hasher.update(data: map[0..<96])
        hasher.update(data: fingerprints)
        map = Array(map[0..<96]) + Array(hasher.finalize()) + fingerprints
        try FileTools.write(mapPath, map)
    }

    static func u32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
    }

    @Test("a format 1 map (SHA-256) is used as it is: only changes are reported, and it moves to GMAC at a rescan")
    func format1MapKeepsWorking() throws {
        let size = 2 * MiB + 700
        let f = try TrackerFixture(size: size, seed: 21)
        var rng = SeededRandom(seed: 21)
        let mapPath = try f.acknowledgedInitialSync()
        try Self.rewriteAsFormat1(mapPath, volumeBytes: try f.contents())
        for b in [3, 100, size / block - 1] { try f.scribble(block: b, rng: &rng) }

        let t = try f.tracker()
        let first = try t.collect()
        #expect(first.reason == .incremental)
        #expect(first.extents == extents(ofBlocks: [3, 100, size / block - 1], volumeSize: size))
        try readAll(t, first)
        try t.acknowledge(epoch: first.epoch)
        // Written back as format 2, still SHA-256 prefixes (function 0, no key): a restart changes nothing.
        let rewritten = try FileTools.read(mapPath)
        #expect(Self.u32(rewritten, 8) == 2 && Self.u32(rewritten, 20) == 0)
        #expect(rewritten[64..<96].allSatisfy { $0 == 0 })
        var expected = try FileTools.read(mapPath)
        try Self.rewriteAsFormat1(mapPath, volumeBytes: try f.contents())
        expected = Array(expected.dropFirst(128))
        #expect(Array(try FileTools.read(mapPath).dropFirst(128)) == expected)
        try FileTools.write(mapPath, rewritten)
        #expect(try t.collect().extents.isEmpty)

        // A rescan starts a new map with the keyed function.
        try t.invalidate(reason: "test")
        let rescan = try t.collect()
        #expect(rescan.reason == .rescan("test"))
        try readAll(t, rescan)
        try t.acknowledge(epoch: rescan.epoch)
        let fresh = try FileTools.read(mapPath)
        #expect(Array(fresh.dropFirst(128)) == (try expectedFingerprints(of: f.contents(), mapFile: fresh)))
        try f.scribble(block: 7, rng: &rng)
        #expect(try t.collect().extents == extents(ofBlocks: [7], volumeSize: size))
    }

    @Test("a map naming an unknown fingerprint function is not used: a rescan says why")
    func unknownFunction() throws {
        let f = try TrackerFixture(size: 256 * KiB, seed: 22)
        let mapPath = try f.acknowledgedInitialSync()
        var map = try FileTools.read(mapPath)
        map.replaceSubrange(20..<24, with: [7, 0, 0, 0])
        var hasher = SHA256()
        hasher.update(data: map[0..<96])
        hasher.update(data: map[128...])
        map.replaceSubrange(96..<128, with: Array(hasher.finalize()))
        try FileTools.write(mapPath, map)
        let t = try f.tracker()
        #expect(try t.collect().reason == .rescan("the fingerprint map uses an unknown fingerprint function (7)"))
    }

    @Test("the map file that holds the key is readable by its owner only")
    func mapIsPrivate() throws {
        let f = try TrackerFixture(size: 64 * KiB, seed: 23)
        let t = try f.tracker()
        try collectReadAndAcknowledge(t)
        let mode = try FileManager.default.attributesOfItem(atPath: t.mapPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }
}
