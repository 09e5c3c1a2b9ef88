import CZstd
import LifeboatCore

/// zstd compression with a reusable context. One instance per thread.
final class ZstdCompressor {
    private let context: OpaquePointer
    let level: Int32

    init(level: Int32 = 1) {
        context = ZSTD_createCCtx()
        self.level = level
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
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
