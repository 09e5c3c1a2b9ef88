import CZstd
import LifeboatCore

/// zstd for extents on the wire (EXTENT encoding 1): fast level 1 on the agent, exact-length decoding on the
/// server. One instance per thread (it keeps a compression context).
public final class ExtentCompression {
    private let context: OpaquePointer
    private var scratch: [UInt8]

    public init(level: Int32 = 1) {
        context = ZSTD_createCCtx()
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_contentSizeFlag, 0)
        ZSTD_CCtx_setParameter(context, ZSTD_c_dictIDFlag, 0)
        scratch = []
    }

    deinit { ZSTD_freeCCtx(context) }

    /// The compressed bytes, or nil when compression saves less than 1/16 (send them raw then).
    public func compress(_ source: UnsafeRawBufferPointer) -> [UInt8]? {
        let limit = source.count - source.count / 16
        guard limit > 0 else { return nil }
        if scratch.count < limit { scratch = [UInt8](repeating: 0, count: limit) }
        let written = scratch.withUnsafeMutableBytes { dst in
            ZSTD_compress2(context, dst.baseAddress, limit, source.baseAddress, source.count)
        }
        if ZSTD_isError(written) != 0 { return nil }
        return Array(scratch[0..<written])
    }

    /// Decodes an extent that must produce exactly `rawLength` bytes; `protocol.malformed` otherwise.
    public static func decompress(_ source: [UInt8], rawLength: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: rawLength)
        let n = out.withUnsafeMutableBytes { dst in
            source.withUnsafeBytes { src in ZSTD_decompress(dst.baseAddress, rawLength, src.baseAddress, src.count) }
        }
        guard ZSTD_isError(n) == 0, n == rawLength else {
            throw LifeboatError(
                "protocol.malformed",
                "a compressed extent does not decode to its announced \(rawLength) bytes"
            )
        }
        return out
    }
}
