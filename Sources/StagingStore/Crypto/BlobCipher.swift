#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import LifeboatCore

/// What a blob is, bound into its authentication so that blobs cannot be swapped between roles.
public enum BlobKind: UInt8, Sendable {
    case chunk = 1
    case node = 2
    case indexFile = 3
    case commit = 4
    case pin = 5
    case packDirectory = 6
}

/// AES-256-GCM for everything the store writes: `nonce(12) ‖ ciphertext ‖ tag(16)`, with associated data
/// `kind ‖ context` (for blobs the context is the blob id, for files their name), so a blob moved to another
/// id, or a file renamed, fails authentication.
struct BlobCipher: Sendable {
    static let overhead = 28
    let keys: KeyRing

    func id(of bytes: UnsafeRawBufferPointer) -> BlobID {
        var hmac = HMAC<SHA256>(key: keys.idKey)
        hmac.update(data: bytes)
        let mac = hmac.finalize()
        return mac.withUnsafeBytes { BlobID(bytes: $0) }
    }

    func id(of bytes: [UInt8]) -> BlobID {
        bytes.withUnsafeBytes { id(of: $0) }
    }

    static func associatedData(_ kind: BlobKind, _ context: [UInt8]) -> [UInt8] {
        [kind.rawValue] + context
    }

    func seal(_ plaintext: UnsafeRawBufferPointer, kind: BlobKind, context: [UInt8]) throws -> Data {
        do {
            let box = try AES.GCM.seal(
                plaintext,
                using: keys.dataKey,
                authenticating: Self.associatedData(kind, context)
            )
            return box.combined!
        } catch {
            throw LifeboatError("store.crypto", "encryption failed", cause: error)
        }
    }

    /// `seal` without joining the parts: a chunk's ciphertext is copied once, into its pack.
    func sealParts(_ plaintext: UnsafeRawBufferPointer, kind: BlobKind, context: [UInt8]) throws -> SealedParts {
        do {
            let box = try AES.GCM.seal(plaintext, using: keys.dataKey, authenticating: Self.associatedData(kind, context))
            return SealedParts(head: Array(box.nonce), ciphertext: box.ciphertext, tag: box.tag)
        } catch {
            throw LifeboatError("store.crypto", "encryption failed", cause: error)
        }
    }

    func seal(_ plaintext: [UInt8], kind: BlobKind, context: [UInt8]) throws -> [UInt8] {
        try plaintext.withUnsafeBytes { (buf) throws in Array(try seal(buf, kind: kind, context: context)) }
    }

    /// Decrypts and authenticates; throws `store.corrupt` when the bytes were changed.
    func open(_ sealed: UnsafeRawBufferPointer, kind: BlobKind, context: [UInt8]) throws -> Data {
        guard sealed.count >= Self.overhead else {
            throw LifeboatError("store.corrupt", "encrypted object is truncated (\(sealed.count) bytes)")
        }
        do {
            let box = try AES.GCM.SealedBox(combined: sealed)
            return try AES.GCM.open(box, using: keys.dataKey, authenticating: Self.associatedData(kind, context))
        } catch {
            throw LifeboatError("store.corrupt", "authentication failed: the data was changed or damaged")
        }
    }

    func open(_ sealed: [UInt8], kind: BlobKind, context: [UInt8]) throws -> [UInt8] {
        try sealed.withUnsafeBytes { (buf) throws in Array(try open(buf, kind: kind, context: context)) }
    }
}

/// A sealed blob in the parts AES-GCM returns — nonce, ciphertext, tag — that, written one after another,
/// are `seal`'s bytes; or, for a blob sealed earlier, all of them in `head`.
struct SealedParts: @unchecked Sendable {
    let head: [UInt8]
    let ciphertext: Data
    let tag: Data

    var count: Int { head.count + ciphertext.count + tag.count }

    init(head: [UInt8], ciphertext: Data, tag: Data) {
        self.head = head
        self.ciphertext = ciphertext
        self.tag = tag
    }

    /// Whole sealed bytes as one part (copies of blobs already sealed).
    init(joined: [UInt8]) {
        head = joined
        ciphertext = Data()
        tag = Data()
    }

    /// Calls `body` with each part in order.
    func forEachPart(_ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        try head.withUnsafeBytes(body)
        try ciphertext.withUnsafeBytes(body)
        try tag.withUnsafeBytes(body)
    }
}
