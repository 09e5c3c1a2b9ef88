import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

// Frames written by hand from docs/replication-protocol.md and FrameCodec.swift (a second implementation of the
// sender's side), and zstd frames written by hand from RFC 8878, so that a hostile peer can send exactly the
// bytes a test wants.

/// The agent → server frames of one crafted session.
private struct CraftedSession {
    var bytes: [UInt8] = []

    private static func u16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    private static func u32(_ v: UInt32) -> [UInt8] {
        (0..<4).reversed().map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) }
    }
    private static func u64(_ v: UInt64) -> [UInt8] {
        (0..<8).reversed().map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) }
    }
    private static func string(_ s: String) -> [UInt8] { u16(UInt16(s.utf8.count)) + Array(s.utf8) }
    private static func volumes(_ list: [(name: String, size: Int, baseEpoch: UInt64)]) -> [UInt8] {
        u16(UInt16(list.count)) + list.flatMap { string($0.name) + u64(UInt64($0.size)) + u64($0.baseEpoch) }
    }

    /// `u32 length` (type + payload), `u8 type`, payload.
    private mutating func frame(_ type: UInt8, _ payload: [UInt8]) {
        bytes += Self.u32(UInt32(payload.count + 1)) + [type] + payload
    }

    /// HELLO (1): protocol version 2, agent version, machine, volumes.
    mutating func hello(machine: String, volume: String, size: Int) {
        frame(1, Self.u16(2) + Self.string("hostile-test") + Self.string(machine) + Self.volumes([(volume, size, 0)]))
    }

    /// BEGIN_COMMIT (3): sequence, volumes with base epoch 0 (an initial sync onto an empty volume).
    mutating func beginCommit(sequence: UInt64, volume: String, size: Int) {
        frame(3, Self.u64(sequence) + Self.volumes([(volume, size, 0)]))
    }

    /// EXTENT (4): volume index 0, offset, encoding, raw length, data.
    mutating func extent(offset: Int, encoding: UInt8 = 2, rawLength: Int, data: [UInt8]) {
        frame(4, Self.u16(0) + Self.u64(UInt64(offset)) + [encoding] + Self.u32(UInt32(rawLength)) + data)
    }

    /// END_COMMIT (5): sequence, extent count, raw bytes, consistent, capture time (ns), one epoch per volume.
    mutating func endCommit(sequence: UInt64, extents: Int, bytes rawBytes: Int, epoch: UInt64) {
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        frame(
            5,
            Self.u64(sequence) + Self.u64(UInt64(extents)) + Self.u64(UInt64(rawBytes)) + [1] + Self.u64(now)
                + Self.u16(1) + Self.u64(epoch)
        )
    }

    /// GOODBYE (13).
    mutating func goodbye() { frame(13, []) }
}

/// The server → agent frames received: (type, payload).
private func parseFrames(_ bytes: [UInt8]) -> [(type: UInt8, payload: [UInt8])] {
    var out: [(UInt8, [UInt8])] = []
    var i = 0
    while i + 5 <= bytes.count {
        let length = Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
        guard length >= 1, i + 4 + length <= bytes.count else { break }
        out.append((bytes[i + 4], Array(bytes[(i + 5)..<(i + 4 + length)])))
        i += 4 + length
    }
    return out
}

private func bigEndian(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }

/// Hand-made zstd frames (RFC 8878): magic, a frame header without content size (window 64 KiB), one block.
private enum HandZstd {
    static let magic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]

    /// Frame header descriptor 0 (or 4: with a content checksum), window descriptor 0x30 (2^16 bytes).
    private static func header(checksum: Bool = false) -> [UInt8] { magic + [checksum ? 0x04 : 0x00, 0x30] }

    /// A 3-byte block header: last block, `type` (0 raw, 1 RLE), size.
    private static func blockHeader(type: UInt32, size: Int) -> [UInt8] {
        let v = UInt32(size) << 3 | type << 1 | 1
        return [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF)]
    }

    /// `count` (at most 64 KiB) copies of `byte`.
    static func rle(_ byte: UInt8, count: Int) -> [UInt8] { header() + blockHeader(type: 1, size: count) + [byte] }

    /// `bytes` (at most 64 KiB) stored as they are.
    static func raw(_ bytes: [UInt8]) -> [UInt8] { header() + blockHeader(type: 0, size: bytes.count) + bytes }

    /// An RLE frame that promises a content checksum and carries a wrong one.
    static func rleWithWrongChecksum(_ byte: UInt8, count: Int) -> [UInt8] {
        header(checksum: true) + blockHeader(type: 1, size: count) + [byte] + [0xDE, 0xAD, 0xBE, 0xEF]
    }

    /// A skippable frame: magic 0x184D2A50, u32 little-endian size, payload.
    static func skippable(_ payload: [UInt8]) -> [UInt8] {
        let n = UInt32(payload.count)
        return [
            0x50, 0x2A, 0x4D, 0x18, UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24),
        ] + payload
    }
}

/// One hostile EXTENT: what it announces and the frames it carries instead.
private struct HostileExtent: CustomStringConvertible {
    var description: String
    var offset: Int
    var rawLength: Int
    var data: [UInt8]
}

/// Runs a crafted session over TLS 1.3 as the machine enrolled in `state` (its certificate and key), with
/// `openssl s_client`; returns the frames the server sent until it closed the connection, PINGs left out.
private func converse(
    _ site: ReplicationSite,
    state: String,
    session: CraftedSession,
    name: String
) throws -> [(type: UInt8, payload: [UInt8])] {
    let input = site.dir.child("\(name).in")
    let output = site.dir.child("\(name).out")
    let errors = site.dir.child("\(name).err")
    try FileTools.write(input, session.bytes)
    // -quiet implies -ign_eof: after the input, s_client keeps reading until the server closes. The timeout only
    // ends a hung run (reported as a failure below), it measures nothing.
    let command =
        "exec timeout 60 openssl s_client -quiet -tls1_3 -cert '\(state)/agent.pem' -key '\(state)/agent.key' "
        + "-CAfile '\(state)/ca.pem' -connect '127.0.0.1:\(site.port)' < '\(input)' > '\(output)' 2> '\(errors)'"
    let r = try Processes.run("/bin/sh", ["-c", command])
    let stderr = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
    #expect(r.status != 124, "\(name): the server did not close the connection: \(stderr)")
    // Keepalive PINGs may come at any time; they say nothing about the session.
    return parseFrames(try FileTools.read(output)).filter { $0.type != 10 }
}

/// Waits (up to 20 s) until the server log holds `needle` at least `count` times; returns how often it does.
private func logCount(_ site: ReplicationSite, _ needle: String, atLeast count: Int) -> Int {
    let deadline = Date().addingTimeInterval(20)
    var seen = 0
    repeat {
        seen = site.log().components(separatedBy: needle).count - 1
        if seen >= count { return seen }
        Thread.sleep(forTimeInterval: 0.05)
    } while Date() < deadline
    return seen
}

/// Live tests against the real server: an enrolled machine (valid certificate) that sends lying EXTENT frames of
/// encoding 2 must lose its connection and commit nothing, and must not damage what the store holds.
@Suite(.serialized)
struct HostileExtentTests {
    @Test(
        "an enrolled machine's malformed segment frames close its connection; no point appears, the last one stays exact, the agent still commits"
    )
    func hostileFramesAreRefused() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("web-h")
        let image = site.dir.child("disk.img")
        let size = 2 * MiB + 4096
        try FileTools.write(image, TestImage.mixed(size: size, seed: 71))
        let first = try site.agentOnce(state: state, volumes: ["disk=" + image])
        try #require(first.status == 0, "agent failed: \(first.stderr)\n\(site.log())")
        let original = try FileTools.read(image)
        try #require(try site.export(machine: "web-h", volume: "disk") == original)
        let pointsBefore = try site.points(machine: "web-h")
        try #require(pointsBefore.count == 1)

        var rng = SeededRandom(seed: 72)
        let hostile: [[HostileExtent]] = [
            [HostileExtent(description: "random bytes", offset: 0, rawLength: 65536, data: rng.bytes(3000))],
            [
                HostileExtent(
                    description: "a frame of 4 KiB for 8 KiB",
                    offset: 0,
                    rawLength: 8192,
                    data: HandZstd.rle(0xAB, count: 4096)
                )
            ],
            [
                HostileExtent(
                    description: "a frame of 8 KiB for 4 KiB",
                    offset: 0,
                    rawLength: 4096,
                    data: HandZstd.rle(0xAB, count: 8192)
                )
            ],
            [
                HostileExtent(
                    description: "one 64 KiB frame where the cut at 64 KiB needs two",
                    offset: 4096,
                    rawLength: 65536,
                    data: HandZstd.rle(0x33, count: 65536)
                )
            ],
            [
                HostileExtent(
                    description: "bytes after the last frame",
                    offset: 0,
                    rawLength: 4096,
                    data: HandZstd.rle(0x11, count: 4096) + [0, 0, 0]
                )
            ],
            [
                HostileExtent(
                    description: "a truncated frame",
                    offset: 65536,
                    rawLength: 4096,
                    data: Array(HandZstd.raw(rng.bytes(4096)).dropLast(10))
                )
            ],
            [
                HostileExtent(
                    description: "a wrong content checksum",
                    offset: 0,
                    rawLength: 4096,
                    data: HandZstd.rleWithWrongChecksum(0x44, count: 4096)
                )
            ],
            [
                HostileExtent(
                    description: "a skippable frame instead of data",
                    offset: 0,
                    rawLength: 4096,
                    data: HandZstd.skippable(rng.bytes(4096))
                )
            ],
            [
                HostileExtent(
                    description: "a valid whole segment first",
                    offset: 0,
                    rawLength: 65536,
                    data: HandZstd.rle(0x77, count: 65536)
                ),
                HostileExtent(
                    description: "then frames of another cut",
                    offset: 2 * 65536 - 4096,
                    rawLength: 8192,
                    data: HandZstd.rle(0x77, count: 8192)
                ),
            ],
            // The lie first, then more valid extents than the server decodes ahead: found before END_COMMIT.
            [HostileExtent(description: "garbage first", offset: 0, rawLength: 8192, data: rng.bytes(500))]
                + (1...12).map {
                    HostileExtent(
                        description: "valid \($0)",
                        offset: $0 * 65536,
                        rawLength: 4096,
                        data: HandZstd.rle(UInt8($0), count: 4096)
                    )
                },
        ]
        var refusals = 0
        for (n, extents) in hostile.enumerated() {
            let what = extents.map(\.description).joined(separator: ", ")
            var session = CraftedSession()
            session.hello(machine: "web-h", volume: "disk", size: size)
            session.beginCommit(sequence: 2, volume: "disk", size: size)
            for e in extents { session.extent(offset: e.offset, rawLength: e.rawLength, data: e.data) }
            // END_COMMIT makes the server write what it decoded: the lie is found there at the latest.
            session.endCommit(
                sequence: 2,
                extents: extents.count,
                bytes: extents.reduce(0) { $0 + $1.rawLength },
                epoch: 1000 + UInt64(n)
            )
            session.goodbye()
            let replies = try converse(site, state: state, session: session, name: "hostile-\(n)")

            // HELLO was accepted (so the frames above are well formed), then the connection closed without an answer.
            #expect(replies.map(\.type) == [2], "\(what): the server sent \(replies.map(\.type))")
            if let welcome = replies.first, welcome.type == 2 {
                #expect(bigEndian(welcome.payload[0..<2]) == 2, "\(what): protocol version")
                #expect(bigEndian(welcome.payload[18..<26]) == 1, "\(what): last committed sequence")
            }
            refusals += 1
            let logged = logCount(site, "[protocol.malformed] a segment-framed extent is malformed", atLeast: refusals)
            #expect(logged == refusals, "\(what): the server log does not name the malformed extent:\n\(site.log())")
            #expect(try site.points(machine: "web-h").count == 1, "\(what): a point appeared")
        }
        #expect(try site.export(machine: "web-h", volume: "disk") == original, "the previous point changed")

        // The real agent carries on from its acknowledged state.
        for b in [1, 100, 300, 513] { try FileTools.write(image, rng.bytes(4096), at: Int64(b * 4096)) }
        let second = try site.agentOnce(state: state, volumes: ["disk=" + image])
        try #require(second.status == 0, "agent failed after the hostile sessions: \(second.stderr)\n\(site.log())")
        let points = try site.points(machine: "web-h")
        #expect(points.count == 2)
        #expect(points.compactMap { $0["sequence"] as? Int }.sorted() == [1, 2])
        #expect(try site.export(machine: "web-h", volume: "disk") == (try FileTools.read(image)))
        #expect(
            try site.export(machine: "web-h", volume: "disk", point: pointsBefore[0]["point"] as? String ?? "")
                == original
        )
        let verify = try ReplicationSite.lifeboat(["store", "verify"] + site.storeArguments)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    @Test("well-formed segment frames written by another implementation commit exactly what they encode")
    func handMadeFramesCommit() throws {
        // The control for the test above: the same hand-made frames, told the truth, are accepted.
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("crafted")
        let segment = 65536
        let size = 3 * segment + 4096
        var rng = SeededRandom(seed: 73)
        var model = [UInt8](repeating: 0, count: size)

        // Extent 1 at 0, 72 KiB: a whole segment as one RLE frame (kept as the chunk), then 8 KiB raw.
        let head = rng.bytes(8192)
        let first = HandZstd.rle(0x5A, count: segment) + HandZstd.raw(head)
        model.replaceSubrange(0..<segment, with: [UInt8](repeating: 0x5A, count: segment))
        model.replaceSubrange(segment..<(segment + 8192), with: head)
        // Extent 2 from 124 KiB to the end: 4 KiB, a whole random segment (too big to keep as a frame), 4 KiB.
        let a = rng.bytes(4096), whole = rng.bytes(segment), b = rng.bytes(4096)
        let second = HandZstd.raw(a) + HandZstd.raw(whole) + HandZstd.raw(b)
        model.replaceSubrange((2 * segment - 4096)..<size, with: a + whole + b)

        var session = CraftedSession()
        session.hello(machine: "crafted", volume: "disk", size: size)
        session.beginCommit(sequence: 1, volume: "disk", size: size)
        session.extent(offset: 0, rawLength: segment + 8192, data: first)
        session.extent(offset: 2 * segment - 4096, rawLength: 4096 + segment + 4096, data: second)
        session.endCommit(sequence: 1, extents: 2, bytes: 2 * segment + 8192 + 8192, epoch: 5)
        session.goodbye()
        let replies = try converse(site, state: state, session: session, name: "truthful")

        #expect(replies.map(\.type) == [2, 6], "expected WELCOME and COMMIT_ACK: \(site.log())")
        if replies.count == 2 {
            #expect(bigEndian(replies[0].payload[18..<26]) == 0, "nothing committed before")
            #expect(bigEndian(replies[1].payload[0..<8]) == 1, "commit 1 acknowledged")
        }
        #expect(try site.points(machine: "crafted").count == 1)
        #expect(try site.export(machine: "crafted", volume: "disk") == model)
        #expect(!site.log().contains("protocol.malformed"))
        let verify = try ReplicationSite.lifeboat(["store", "verify"] + site.storeArguments)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }
}
