import CNIOBoringSSL
import Crypto
import LifeboatCore

/// How the fingerprints of one volume's map are computed. The function and its key are part of the map file:
/// fingerprints are only ever compared with fingerprints of the same function and key.
///
/// - `gmac` (new maps): AES-256-GMAC under a random key of the volume's own, with a fixed nonce — GHASH of the
///   block, masked. A keyed universal hash: for two different 4 KiB blocks, the chance over the key that they
///   get the same fingerprint is at most 258/2¹²⁸, and what is written to the volume cannot depend on a key that
///   only the agent's state directory holds (0600, like the map). It is not a MAC and needs no nonce: change
///   detection only has to notice a block that differs from what was sent; root on the source, who could read
///   the key, can change what the agent sends anyway. About 250 ns per block with VAES/VPCLMULQDQ, twelve times
///   faster than SHA-256 with SHA-NI here, which decides how long a scan of an unchanged volume takes.
/// - `sha256Prefix` (maps of format 1): the first 16 bytes of SHA-256 of the block; kept so that an upgraded
///   agent does not resend its volumes. A volume moves to `gmac` at its next full resynchronisation.
///
/// A last partial block is fingerprinted padded with zeros to 4 KiB, so growing a volume with zeros changes no
/// fingerprint. `seal` of one shared BoringSSL AEAD context may run on many threads at once (BoringSSL's
/// contract for AEAD contexts), so one fingerprinter serves every scan worker.
final class BlockFingerprinter: @unchecked Sendable {
    enum Function: UInt32, Sendable {
        case sha256Prefix = 0
        case gmac = 1
    }

    static let keySize = 32

    let function: Function
    /// The GMAC key (32 bytes); empty for `sha256Prefix`.
    let key: [UInt8]
    /// The fingerprint of an all-zero block.
    private(set) var zero = Fingerprint(low: 0, high: 0)
    private let context: UnsafeMutablePointer<EVP_AEAD_CTX>?
    private static let nonce = [UInt8](repeating: 0, count: 12)

    /// A fingerprinter of `function`; `key` must be 32 bytes for `gmac`.
    init(function: Function, key: [UInt8]) throws {
        self.function = function
        switch function {
        case .sha256Prefix:
            self.key = []
            context = nil
        case .gmac:
            guard key.count == Self.keySize else {
                throw LifeboatError("tracker.bad-key", "a fingerprint key must be \(Self.keySize) bytes, not \(key.count)")
            }
            self.key = key
            let context = UnsafeMutablePointer<EVP_AEAD_CTX>.allocate(capacity: 1)
            EVP_AEAD_CTX_zero(context)
            guard EVP_AEAD_CTX_init(context, EVP_aead_aes_256_gcm(), key, key.count, 16, nil) == 1 else {
                context.deallocate()
                throw LifeboatError("tracker.crypto", "cannot set up AES-256-GMAC for block fingerprints")
            }
            self.context = context
        }
        zero = [UInt8](repeating: 0, count: Fingerprint.blockSize).withUnsafeBytes { of($0) }
    }

    /// A `gmac` fingerprinter with a new random key (for a volume that starts a new map).
    static func fresh() -> BlockFingerprinter {
        let key = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        // A 32-byte key cannot be refused.
        return try! BlockFingerprinter(function: .gmac, key: key)
    }

    deinit {
        if let context {
            EVP_AEAD_CTX_cleanup(context)
            context.deallocate()
        }
    }

    /// Fingerprint of a block; `bytes.count` must be `Fingerprint.blockSize`.
    @inline(__always)
    func of(_ bytes: UnsafeRawBufferPointer) -> Fingerprint {
        guard let context else {
            var hasher = SHA256()
            hasher.update(bufferPointer: bytes)
            return hasher.finalize().withUnsafeBytes { Fingerprint(digestPrefix: $0) }
        }
        var tag = (UInt64(0), UInt64(0))
        var written = 0
        let ok = withUnsafeMutableBytes(of: &tag) { out in
            Self.nonce.withUnsafeBufferPointer { nonce in
                EVP_AEAD_CTX_seal(
                    context,
                    out.baseAddress!.assumingMemoryBound(to: UInt8.self), &written, 16,
                    nonce.baseAddress, nonce.count,
                    nil, 0,
                    bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count
                )
            }
        }
        // Sealing nothing with a valid context and a 16-byte output cannot fail; if BoringSSL ever says it did,
        // stopping is better than a fingerprint that would hide a change.
        precondition(ok == 1 && written == 16, "AES-256-GMAC of a block failed")
        return Fingerprint(low: tag.0, high: tag.1)
    }

    /// Fingerprint of a block of `count` ≤ 4096 bytes, padded with zeros. An all-zero block costs no hash.
    func ofPartial(_ bytes: UnsafeRawBufferPointer) -> Fingerprint {
        if RawMemory.isZero(bytes) { return zero }
        if bytes.count == Fingerprint.blockSize { return of(bytes) }
        var padded = [UInt8](repeating: 0, count: Fingerprint.blockSize)
        padded.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
        return padded.withUnsafeBytes { of($0) }
    }
}
