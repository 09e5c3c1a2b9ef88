import CZstd
import LifeboatCore

/// zstd compression with a reusable context. One instance per thread.
final class ZstdCompressor {
    private let context: OpaquePointer
    let level: Int32

    /// Level 3: measured on the benchmark's log text at 64 KiB, 2 % smaller than level 1 for about 20 % more
    /// compression time (level 2: 1 % smaller, 5 % slower). Restic stores the same data in about 0.1 % less
    /// than level 2 does, so level 2 left no margin; see docs/benchmarks.md, "Compression".
    static let defaultLevel: Int32 = 3

    init(level: Int32 = ZstdCompressor.defaultLevel) {
        context = ZSTD_createCCtx()
        self.level = level
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        // The index records each blob's length: the frame needs neither content size nor dictionary id.
        ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 0)
        ZSTD_CCtx_setParameter(context, ZSTD_c_dictIDFlag, 0)
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Compresses `source` into `destination`. Returns nil when compression does not save at least 1/32 of
    /// the size (the caller then stores the bytes uncompressed); `destination` must hold `source.count` bytes.
    func compress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) -> Int? {
        let limit = min(destination.count, source.count - source.count / 32)
        let written = ZSTD_compress2(context, destination.baseAddress, limit, source.baseAddress, source.count)
        if ZSTD_isError(written) != 0 { return nil }
        return written
    }
}

enum Zstd {
    /// Compresses small metadata (index files, pack directories) in one call.
    static func compress(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
        let n = out.withUnsafeMutableBytes { dst in
            bytes.withUnsafeBytes { src in ZSTD_compress(dst.baseAddress, dst.count, src.baseAddress, src.count, 3) }
        }
        precondition(ZSTD_isError(n) == 0, "zstd cannot fail with a bound-sized buffer")
        out.removeLast(out.count - n)
        return out
    }

    /// Decompresses metadata of at most `limit` bytes.
    static func decompress(_ bytes: [UInt8], limit: Int, what: String) throws -> [UInt8] {
        let size = bytes.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        guard size != ZSTD_CONTENTSIZE_ERROR, size != ZSTD_CONTENTSIZE_UNKNOWN, size <= UInt64(limit) else {
            throw LifeboatError("store.corrupt", "\(what) is not a valid compressed frame")
        }
        var out = [UInt8](repeating: 0, count: Int(size))
        let n = out.withUnsafeMutableBytes { dst in
            bytes.withUnsafeBytes { src in ZSTD_decompress(dst.baseAddress, dst.count, src.baseAddress, src.count) }
        }
        guard ZSTD_isError(n) == 0, n == Int(size) else {
            throw LifeboatError("store.corrupt", "\(what) does not decompress")
        }
        return out
    }

    /// Decompresses a frame that must produce exactly `rawLength` bytes.
    static func decompress(_ source: UnsafeRawBufferPointer, rawLength: Int, into destination: UnsafeMutableRawBufferPointer)
        throws
    {
        precondition(destination.count >= rawLength)
        let n = ZSTD_decompress(destination.baseAddress, rawLength, source.baseAddress, source.count)
        if ZSTD_isError(n) != 0 || n != rawLength {
            throw LifeboatError("store.corrupt", "decompression failed: the data is damaged")
        }
    }
}
