import LifeboatCore
import LifeboatTesting
import ReplicationTransport
import Testing

/// An extent of a volume: where it starts and how many bytes it has.
struct FramedExtent: Sendable, CustomTestStringConvertible {
    var offset: UInt64
    var length: Int

    var testDescription: String { "\(length) bytes at \(offset)" }
}

/// What an extent holds: each kind takes another path through zstd (raw blocks, compressed blocks, RLE).
enum FramedContent: Sendable, CaseIterable, CustomTestStringConvertible {
    case random, text, zero

    var testDescription: String { "\(self)" }

    func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededRandom(seed: seed)
        switch self {
        case .random:
            return rng.bytes(count)
        case .text:
            var slice = ArraySlice([UInt8](repeating: 0, count: count))
            TestImage.fillText(&slice, rng: &rng)
            return Array(slice)
        case .zero:
            return [UInt8](repeating: 0, count: count)
        }
    }
}

private let segment = SegmentFrames.segmentSize

/// Encodes `bytes` as an encoding-2 extent at `offset` with a fresh encoder.
private func encoded(_ bytes: [UInt8], at offset: UInt64) -> [UInt8] {
    bytes.withUnsafeBytes { SegmentFrames.Encoder().encode($0, at: offset) }
}

/// Runs `body` and checks that it throws `protocol.malformed` (and nothing else).
private func expectMalformed(
    _ what: String,
    sourceLocation: Testing.SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("\(what): decoded without an error", sourceLocation: sourceLocation)
    } catch let error as LifeboatError {
        #expect(
            error.code.rawValue == "protocol.malformed",
            "\(what): got [\(error.code)] \(error.message)",
            sourceLocation: sourceLocation
        )
    } catch {
        Issue.record("\(what): not a LifeboatError: \(error)", sourceLocation: sourceLocation)
    }
}

/// Checks the invariants of a successful decode: the pieces are exactly the extent's cuts at segment
/// boundaries, in order, their frames tile the data, and their bytes add up to the announced length.
private func expectWellFormed(
    _ pieces: [SegmentFrames.Piece],
    data: [UInt8],
    offset: UInt64,
    rawLength: Int,
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) {
    let cuts = SegmentFrames.pieces(offset: offset, length: rawLength)
    #expect(pieces.map(\.offset) == cuts.map(\.offset), sourceLocation: sourceLocation)
    #expect(pieces.map(\.bytes.count) == cuts.map(\.length), sourceLocation: sourceLocation)
    #expect(pieces.reduce(0) { $0 + $1.bytes.count } == rawLength, sourceLocation: sourceLocation)
    var position = 0
    for piece in pieces {
        #expect(piece.frame.lowerBound == position, "frames are contiguous", sourceLocation: sourceLocation)
        #expect(!piece.frame.isEmpty, sourceLocation: sourceLocation)
        position = piece.frame.upperBound
    }
    #expect(position == data.count, "the frames cover the whole data", sourceLocation: sourceLocation)
}

@Suite("Segment frames: EXTENT encoding 2")
struct SegmentFramesTests {
    static let extents: [FramedExtent] = [
        FramedExtent(offset: 0, length: segment),  // one whole segment
        FramedExtent(offset: 0, length: 4 * segment),  // whole segments only
        FramedExtent(offset: 4096, length: segment),  // same length, but straddles a boundary: no whole segment
        FramedExtent(offset: UInt64(segment - 4096), length: 3 * 4096),  // across one boundary
        FramedExtent(offset: UInt64(3 * segment + 8192), length: 4 * 4096),  // inside one segment
        FramedExtent(offset: UInt64(MiB + 12 * 1024), length: 50 * 4096),  // unaligned, not a multiple of 64 KiB
        FramedExtent(offset: UInt64(7 * segment), length: 4096),  // one block at a segment's start
        FramedExtent(offset: UInt64(8 * segment - 4096), length: 4096),  // one block at a segment's end
        FramedExtent(offset: 1 << 40, length: 4 << 20),  // the largest extent, far into a large volume
    ]

    @Test(
        "extents round-trip: decoded pieces hold the bytes in order, cut at the volume's 64 KiB boundaries",
        arguments: SegmentFramesTests.extents,
        FramedContent.allCases
    )
    func roundTrip(extent: FramedExtent, content: FramedContent) throws {
        let bytes = content.bytes(extent.length, seed: extent.offset &+ UInt64(extent.length))
        let data = encoded(bytes, at: extent.offset)
        let pieces = try SegmentFrames.decode(data, offset: extent.offset, rawLength: extent.length)
        expectWellFormed(pieces, data: data, offset: extent.offset, rawLength: extent.length)
        #expect(pieces.flatMap(\.bytes) == bytes)
        for piece in pieces {
            // The volume offset of every piece but the first is a segment boundary; none crosses one.
            let start = piece.offset % UInt64(segment)
            #expect(start + UInt64(piece.bytes.count) <= UInt64(segment))
            if piece.offset != extent.offset { #expect(start == 0) }
            #expect(piece.isWholeSegment == (start == 0 && piece.bytes.count == segment))
            // Each frame alone is that piece: what the server keeps as a whole segment's chunk body.
            let alone = try SegmentFrames.decode(
                Array(data[piece.frame]),
                offset: piece.offset,
                rawLength: piece.bytes.count
            )
            #expect(alone.count == 1)
            #expect(alone.first?.bytes == piece.bytes)
        }
        switch content {
        case .zero: #expect(data.count < extent.length / 16, "zeros are sent as almost nothing (\(data.count) bytes)")
        case .text: #expect(data.count < extent.length / 2, "text is sent compressed (\(data.count) bytes)")
        case .random: #expect(data.count >= extent.length, "random data does not shrink (\(data.count) bytes)")
        }
    }

    @Test("one encoder reused for many extents makes the same frames as fresh ones")
    func encoderReuse() throws {
        let encoder = SegmentFrames.Encoder()
        for (n, extent) in Self.extents.enumerated() where extent.length <= 4 * segment {
            for content in FramedContent.allCases {
                let bytes = content.bytes(extent.length, seed: UInt64(n) * 3 + 1)
                let reused = bytes.withUnsafeBytes { encoder.encode($0, at: extent.offset) }
                #expect(reused == encoded(bytes, at: extent.offset), "\(extent.testDescription), \(content)")
                let pieces = try SegmentFrames.decode(reused, offset: extent.offset, rawLength: extent.length)
                #expect(pieces.flatMap(\.bytes) == bytes)
            }
        }
    }

    @Test("pieces are cut exactly at 64 KiB volume boundaries and only full aligned ones are whole segments")
    func cuts() throws {
        #expect(SegmentFrames.segmentSize == 65536)
        #expect(SegmentFrames.encoding == 2)
        #expect(SegmentFrames.pieces(offset: 12288, length: 0).isEmpty)

        let straddling = SegmentFrames.pieces(offset: 4096, length: 3 * segment)
        #expect(straddling.map(\.offset) == [4096, 65536, 131072, 196608])
        #expect(straddling.map(\.length) == [61440, 65536, 65536, 4096])

        let inside = SegmentFrames.pieces(offset: UInt64(5 * segment + 4096), length: 8192)
        #expect(inside.map(\.offset) == [UInt64(5 * segment + 4096)])
        #expect(inside.map(\.length) == [8192])

        let endingAtBoundary = SegmentFrames.pieces(offset: UInt64(2 * segment - 8192), length: 8192 + segment)
        #expect(endingAtBoundary.map(\.offset) == [UInt64(2 * segment - 8192), UInt64(2 * segment)])
        #expect(endingAtBoundary.map(\.length) == [8192, segment])

        // Decoded: whole segments are recognised, the partial head and tail are not.
        let bytes = FramedContent.text.bytes(3 * segment, seed: 4)
        let data = encoded(bytes, at: 4096)
        let pieces = try SegmentFrames.decode(data, offset: 4096, rawLength: bytes.count)
        #expect(pieces.map(\.isWholeSegment) == [false, true, true, false])
        #expect(pieces.map(\.offset) == straddling.map(\.offset))

        // A 64 KiB piece that is not aligned is impossible by construction; a full aligned extent is whole.
        let aligned = try SegmentFrames.decode(encoded(Array(bytes[0..<segment]), at: 0), offset: 0, rawLength: segment)
        #expect(aligned.map(\.isWholeSegment) == [true])
        let unaligned = try SegmentFrames.decode(
            encoded(Array(bytes[0..<segment]), at: 8192),
            offset: 8192,
            rawLength: segment
        )
        #expect(unaligned.map(\.isWholeSegment) == [false, false])
    }

    @Test("truncated frames, bytes after the last frame and missing frames are malformed")
    func truncatedAndTrailing() {
        let bytes = FramedContent.text.bytes(2 * segment + 8192, seed: 11)
        let offset = UInt64(segment - 4096)
        let data = encoded(bytes, at: offset)
        expectMalformed("last byte cut off") {
            _ = try SegmentFrames.decode(Array(data.dropLast()), offset: offset, rawLength: bytes.count)
        }
        expectMalformed("half the data") {
            _ = try SegmentFrames.decode(Array(data.prefix(data.count / 2)), offset: offset, rawLength: bytes.count)
        }
        expectMalformed("one zero byte after the last frame") {
            _ = try SegmentFrames.decode(data + [0], offset: offset, rawLength: bytes.count)
        }
        expectMalformed("a whole extra frame after the last one") {
            _ = try SegmentFrames.decode(
                data + encoded([UInt8](repeating: 7, count: 4096), at: 0),
                offset: offset,
                rawLength: bytes.count
            )
        }
        expectMalformed("the announced length has one block more than the frames") {
            _ = try SegmentFrames.decode(data, offset: offset, rawLength: bytes.count + 4096)
        }
        expectMalformed("the announced length has one block less than the frames") {
            _ = try SegmentFrames.decode(data, offset: offset, rawLength: bytes.count - 4096)
        }
        // The last frame alone dropped: the data ends before the last piece.
        let pieces = SegmentFrames.pieces(offset: offset, length: bytes.count)
        let withoutLast = bytes.withUnsafeBytes { raw in
            SegmentFrames.Encoder().encode(
                UnsafeRawBufferPointer(rebasing: raw[0..<(bytes.count - pieces.last!.length)]),
                at: offset
            )
        }
        expectMalformed("the last frame missing") {
            _ = try SegmentFrames.decode(withoutLast, offset: offset, rawLength: bytes.count)
        }
    }

    @Test("frames cut for another offset decode to the wrong lengths and are malformed")
    func framesOfAnotherCut() {
        let bytes = FramedContent.random.bytes(2 * segment, seed: 12)
        // Encoded at 4096 (pieces of 60, 64 and 4 KiB), announced at 0 (two of 64 KiB): the first frame is short.
        expectMalformed("frames decode to fewer bytes than their pieces") {
            _ = try SegmentFrames.decode(encoded(bytes, at: 4096), offset: 0, rawLength: bytes.count)
        }
        // Encoded at 0 (64 + 64 KiB), announced at 4096 (60 + 64 + 4 KiB): the first frame is too long.
        expectMalformed("frames decode to more bytes than their pieces") {
            _ = try SegmentFrames.decode(encoded(bytes, at: 0), offset: 4096, rawLength: bytes.count)
        }
        // One frame for a whole extent inside a segment, announced across a boundary.
        let small = FramedContent.text.bytes(16384, seed: 13)
        expectMalformed("one frame where two are due") {
            _ = try SegmentFrames.decode(encoded(small, at: 0), offset: UInt64(segment - 8192), rawLength: small.count)
        }
    }

    @Test("random garbage and empty data are malformed")
    func garbage() {
        var rng = SeededRandom(seed: 14)
        for length in [1, 3, 4, 17, 4096, 70000] {
            let junk = rng.bytes(length)
            expectMalformed("\(length) random bytes") { _ = try SegmentFrames.decode(junk, offset: 0, rawLength: 8192) }
            expectMalformed("\(length) random bytes across a boundary") {
                _ = try SegmentFrames.decode(junk, offset: UInt64(segment - 4096), rawLength: 8192)
            }
        }
        // A valid zstd magic number followed by junk.
        expectMalformed("zstd magic and junk") {
            _ = try SegmentFrames.decode([0x28, 0xB5, 0x2F, 0xFD] + rng.bytes(200), offset: 0, rawLength: 4096)
        }
        expectMalformed("empty data for one block") { _ = try SegmentFrames.decode([], offset: 0, rawLength: 4096) }
        expectMalformed("empty data for a whole segment") {
            _ = try SegmentFrames.decode([], offset: 0, rawLength: segment)
        }
        expectMalformed("zeros instead of frames") {
            _ = try SegmentFrames.decode([UInt8](repeating: 0, count: 64), offset: 0, rawLength: 4096)
        }
    }

    @Test("swapped frames of pieces of different lengths are malformed; of equal lengths they decode as sent")
    func swappedFrames() throws {
        // At 4096 with 64 KiB: a 60 KiB piece and a 4 KiB piece.
        let bytes = FramedContent.text.bytes(segment, seed: 15)
        let data = encoded(bytes, at: 4096)
        let pieces = try SegmentFrames.decode(data, offset: 4096, rawLength: bytes.count)
        try #require(pieces.count == 2)
        let swapped = Array(data[pieces[1].frame]) + Array(data[pieces[0].frame])
        expectMalformed("a 4 KiB frame where the 60 KiB one is due") {
            _ = try SegmentFrames.decode(swapped, offset: 4096, rawLength: bytes.count)
        }

        // Two whole segments: every frame has the right length, so the swap is the content the sender sent
        // (the transport's integrity protects the order): the decoder returns exactly that, nothing mixed.
        let two = FramedContent.random.bytes(segment, seed: 16) + FramedContent.text.bytes(segment, seed: 17)
        let twoData = encoded(two, at: 0)
        let twoPieces = try SegmentFrames.decode(twoData, offset: 0, rawLength: two.count)
        try #require(twoPieces.count == 2)
        let twoSwapped = Array(twoData[twoPieces[1].frame]) + Array(twoData[twoPieces[0].frame])
        let decoded = try SegmentFrames.decode(twoSwapped, offset: 0, rawLength: two.count)
        expectWellFormed(decoded, data: twoSwapped, offset: 0, rawLength: two.count)
        #expect(decoded.flatMap(\.bytes) == Array(two[segment...]) + Array(two[..<segment]))
    }

    @Test("mutated and truncated frames only ever decode to the announced length or fail as malformed")
    func fuzz() throws {
        var rng = SeededRandom(seed: 20_261_130)
        let offset = UInt64(3 * segment - 8192)
        var bytes = FramedContent.text.bytes(3 * segment, seed: 21)
        bytes.replaceSubrange(segment..<(segment + 16384), with: FramedContent.random.bytes(16384, seed: 22))
        bytes.replaceSubrange((2 * segment)..<(2 * segment + 8192), with: [UInt8](repeating: 0, count: 8192))
        let rawLength = bytes.count
        let original = encoded(bytes, at: offset)
        var decodedCount = 0
        var malformedCount = 0
        for round in 0..<600 {
            var data = original
            for _ in 0..<(1 + rng.below(3)) {
                switch rng.below(6) {
                case 0:  // flip bits of one byte
                    let i = rng.below(data.count)
                    data[i] ^= UInt8(1 + rng.below(255))
                case 1:  // truncate
                    data.removeLast(rng.below(data.count))
                case 2:  // insert random bytes
                    data.insert(contentsOf: rng.bytes(1 + rng.below(32)), at: rng.below(data.count + 1))
                case 3:  // delete a range
                    guard data.count > 1 else { break }
                    let start = rng.below(data.count - 1)
                    data.removeSubrange(start..<min(data.count, start + 1 + rng.below(64)))
                case 4:  // duplicate a range
                    guard !data.isEmpty else { break }
                    let start = rng.below(data.count)
                    let piece = data[start..<min(data.count, start + 1 + rng.below(512))]
                    data.insert(contentsOf: piece, at: rng.below(data.count + 1))
                default:  // overwrite a run with one byte value
                    guard !data.isEmpty else { break }
                    let start = rng.below(data.count)
                    let end = min(data.count, start + 1 + rng.below(16))
                    data.replaceSubrange(start..<end, with: repeatElement(UInt8(rng.below(256)), count: end - start))
                }
            }
            do {
                let pieces = try SegmentFrames.decode(data, offset: offset, rawLength: rawLength)
                expectWellFormed(pieces, data: data, offset: offset, rawLength: rawLength)
                decodedCount += 1
            } catch let error as LifeboatError {
                #expect(error.code.rawValue == "protocol.malformed", "round \(round): [\(error.code)] \(error.message)")
                malformedCount += 1
            }
            // The decoder's pooled zstd contexts are not left broken by a failure: the intact data still decodes.
            let intact = try SegmentFrames.decode(original, offset: offset, rawLength: rawLength)
            if intact.flatMap(\.bytes) != bytes {
                Issue.record("round \(round): the intact extent no longer decodes to its bytes")
                break
            }
        }
        // Both outcomes happened: damage inside raw literals still decodes (to other bytes of the right length).
        #expect(malformedCount > 0)
        #expect(decodedCount > 0)
        #expect(decodedCount + malformedCount == 600)
    }
}
