import CZstd
import LifeboatCore

/// EXTENT encoding 1 (zstd of the whole extent, exact-length decoding). Agents of protocol 2 send encoding 2
/// (`SegmentFrames`); the server still decodes this one.
public enum ExtentCompression {
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
