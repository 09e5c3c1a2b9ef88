import CZstd
import LifeboatCore

/// EXTENT encoding 2: the extent's bytes cut at every 64 KiB boundary of the volume (the staging store's
/// segments), each piece compressed as one zstd frame that decodes to exactly that piece, the frames
/// concatenated in order. The agent compresses every byte once; the server decodes each frame to check it and
/// to compute the segment's id, and keeps the frame of a whole segment as the stored chunk's body instead of
/// compressing the same bytes again (docs/replication-protocol.md).
public enum SegmentFrames {
    public static let encoding: UInt8 = 2
    /// The staging store's segment size; the server checks that both agree.
    public static let segmentSize = 64 << 10

    /// The pieces of an extent at `offset` of `length` bytes: (volume offset, length), cut at segment boundaries.
    public static func pieces(offset: UInt64, length: Int) -> [(offset: UInt64, length: Int)] {
        var out: [(UInt64, Int)] = []
        var position = offset
        let end = offset + UInt64(length)
        while position < end {
            let room = UInt64(segmentSize) - position % UInt64(segmentSize)
            let count = Int(min(room, end - position))
            out.append((position, count))
            position += UInt64(count)
        }
        return out
    }

    /// Compresses extents into encoding 2. One instance per thread (it keeps a zstd context and a buffer).
    public final class Encoder {
        private let context: OpaquePointer
        private let scratch: UnsafeMutableRawBufferPointer

        /// Level 1: the agent's CPU is the scarce resource during an initial sync; on the benchmark's data
        /// level 3 saves 0.6 % of the stored size for 40 % more compression time (docs/benchmarks.md).
        public init(level: Int32 = 1) {
            context = ZSTD_createCCtx()
            ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
            // The server knows every piece's length: the frames need neither content size nor dictionary id.
            ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 0)
            ZSTD_CCtx_setParameter(context, ZSTD_c_dictIDFlag, 0)
            scratch = .allocate(byteCount: ZSTD_compressBound(SegmentFrames.segmentSize), alignment: 64)
        }

        deinit {
            ZSTD_freeCCtx(context)
            scratch.deallocate()
        }

        /// The frames of `bytes`, which start at volume offset `offset`.
        public func encode(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count / 2 + 64)
            var start = 0
            for piece in SegmentFrames.pieces(offset: offset, length: bytes.count) {
                let n = ZSTD_compress2(context, scratch.baseAddress, scratch.count, bytes.baseAddress! + start, piece.length)
                precondition(ZSTD_isError(n) == 0, "zstd cannot fail with a bound-sized buffer")
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
                start += piece.length
            }
            return out
        }
    }

    /// One decoded piece: where it goes, its bytes, and the frame it came from (a range of the EXTENT's data).
    public struct Piece: Sendable {
        public var offset: UInt64
        public var bytes: [UInt8]
        public var frame: Range<Int>

        /// True when the piece covers one whole segment.
        public var isWholeSegment: Bool { bytes.count == SegmentFrames.segmentSize && offset % UInt64(SegmentFrames.segmentSize) == 0 }
    }

    /// Splits and decodes the data of an encoding-2 EXTENT at `offset` announcing `rawLength` bytes. Throws
    /// `protocol.malformed` when a frame is damaged, decodes to another length, or bytes follow the last frame.
    public static func decode(_ data: [UInt8], offset: UInt64, rawLength: Int) throws -> [Piece] {
        try DecoderPool.shared.with { context in
            try data.withUnsafeBytes { source in
                var pieces: [Piece] = []
                var position = 0
                for (pieceOffset, length) in Self.pieces(offset: offset, length: rawLength) {
                    let remaining = source.count - position
                    guard remaining > 0 else {
                        throw malformed("the data ends before the piece at \(pieceOffset)")
                    }
                    let frameSize = ZSTD_findFrameCompressedSize(source.baseAddress! + position, remaining)
                    guard ZSTD_isError(frameSize) == 0, frameSize > 0, frameSize <= remaining else {
                        throw malformed("the frame of the piece at \(pieceOffset) is damaged")
                    }
                    var bytes = [UInt8](repeating: 0, count: length)
                    let n = bytes.withUnsafeMutableBytes { out in
                        ZSTD_decompressDCtx(context, out.baseAddress, length, source.baseAddress! + position, frameSize)
                    }
                    guard ZSTD_isError(n) == 0, n == length else {
                        throw malformed("the frame of the piece at \(pieceOffset) does not decode to its \(length) bytes")
                    }
                    pieces.append(Piece(offset: pieceOffset, bytes: bytes, frame: position..<(position + frameSize)))
                    position += frameSize
                }
                guard position == source.count else {
                    throw malformed("\(source.count - position) bytes follow the last frame")
                }
                return pieces
            }
        }
    }

    private static func malformed(_ what: String) -> LifeboatError {
        LifeboatError("protocol.malformed", "a segment-framed extent is malformed: \(what)")
    }

    /// zstd decompression contexts for the threads that decode (a context per call would allocate each time).
    final class DecoderPool: @unchecked Sendable {
        static let shared = DecoderPool()
        private let lock = PlainLock()
        private var idle: [OpaquePointer] = []

        func with<T>(_ body: (OpaquePointer) throws -> T) rethrows -> T {
            let context = lock.withLock { idle.popLast() } ?? ZSTD_createDCtx()!
            defer {
                let kept = lock.withLock { () -> Bool in
                    guard idle.count < 16 else { return false }
                    idle.append(context)
                    return true
                }
                if !kept { ZSTD_freeDCtx(context) }
            }
            return try body(context)
        }
    }
}
