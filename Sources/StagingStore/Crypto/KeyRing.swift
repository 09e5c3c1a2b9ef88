#if canImport(Glibc)
@preconcurrency import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import CryptoExtras
import LifeboatCore
import LifeboatSystem

/// Where the master key comes from.
public enum MasterKeySource: Sendable {
    /// A file holding 32 random bytes in hex, created with mode 0600 by `init`.
    case keyFile(path: String)
    /// A passphrase, stretched with scrypt.
    case passphrase(String)
}

/// The store's data keys: one encrypts blobs (AES-256-GCM), one keys the blob ids (HMAC-SHA-256).
/// They are random, made once by `init`, and kept in the config only wrapped by a master key.
public struct KeyRing: Sendable {
    let dataKey: SymmetricKey
    let idKey: SymmetricKey

    static func generate() -> KeyRing {
        KeyRing(dataKey: SymmetricKey(size: .bits256), idKey: SymmetricKey(size: .bits256))
    }

    var serialized: [UInt8] {
        dataKey.withUnsafeBytes { Array($0) } + idKey.withUnsafeBytes { Array($0) }
    }

    init(dataKey: SymmetricKey, idKey: SymmetricKey) {
        self.dataKey = dataKey
        self.idKey = idKey
    }

    init(serialized bytes: [UInt8]) throws {
        guard bytes.count == 64 else {
            throw LifeboatError("store.config-corrupt", "the wrapped key has the wrong length")
        }
        dataKey = SymmetricKey(data: bytes[0..<32])
        idKey = SymmetricKey(data: bytes[32..<64])
    }
}

/// A master-key slot in the config: how to derive the wrapping key, and the wrapped data keys.
struct KeySlot: Sendable, Equatable {
    enum Kind: UInt8, Sendable {
        case keyFile = 1
        case scrypt = 2
    }

    var kind: Kind
    var salt: [UInt8]
    /// scrypt cost parameters (log2 N, r, p); zero for key files.
    var logN: UInt8
    var r: UInt32
    var p: UInt32
    /// nonce ‖ ciphertext ‖ tag of the serialized key ring.
    var wrapped: [UInt8]

    /// scrypt N = 2^15, r = 8, p = 1: about 32 MiB and 0.1 s per attempt.
    static let defaultLogN: UInt8 = 15

    static func make(for source: MasterKeySource, keyRing: KeyRing, associatedData: [UInt8]) throws
        -> KeySlot
    {
        let salt = SystemCalls.randomBytes(32)
        var slot: KeySlot
        switch source {
        case .keyFile:
            slot = KeySlot(kind: .keyFile, salt: salt, logN: 0, r: 0, p: 0, wrapped: [])
        case .passphrase:
            slot = KeySlot(kind: .scrypt, salt: salt, logN: defaultLogN, r: 8, p: 1, wrapped: [])
        }
        let wrappingKey = try slot.wrappingKey(from: source)
        do {
            let box = try AES.GCM.seal(keyRing.serialized, using: wrappingKey, authenticating: associatedData)
            slot.wrapped = Array(box.combined!)
        } catch {
            throw LifeboatError("store.crypto", "could not wrap the store keys", cause: error)
        }
        return slot
    }

    func wrappingKey(from source: MasterKeySource) throws -> SymmetricKey {
        switch (kind, source) {
        case (.keyFile, .keyFile(let path)):
            let master = try MasterKeyFile.read(path)
            return HKDF<SHA256>.deriveKey(
                inputKeyMaterial: master,
                salt: salt,
                info: Array("lifeboat key slot v1".utf8),
                outputByteCount: 32
            )
        case (.scrypt, .passphrase(let passphrase)):
            do {
                return try KDF.Scrypt.deriveKey(
                    from: Array(passphrase.utf8),
                    salt: salt,
                    outputByteCount: 32,
                    rounds: 1 << Int(logN),
                    blockSize: Int(r),
                    parallelism: Int(p)
                )
            } catch {
                throw LifeboatError("store.crypto", "scrypt key derivation failed", cause: error)
            }
        default:
            throw LifeboatError("store.wrong-key-kind", "slot kind does not match the key source")
        }
    }

    /// Unwraps the key ring; nil when this source is not the slot's master key.
    func unwrap(with source: MasterKeySource, associatedData: [UInt8]) throws -> KeyRing? {
        let key = try wrappingKey(from: source)
        do {
            let box = try AES.GCM.SealedBox(combined: wrapped)
            let plain = try AES.GCM.open(box, using: key, authenticating: associatedData)
            return try KeyRing(serialized: Array(plain))
        } catch let e as LifeboatError {
            throw e
        } catch {
            return nil
        }
    }

    func matches(_ source: MasterKeySource) -> Bool {
        switch (kind, source) {
        case (.keyFile, .keyFile), (.scrypt, .passphrase): true
        default: false
        }
    }
}

/// The master key file: `lifeboat-master-key-v1 <64 hex digits>\n`, mode 0600.
public enum MasterKeyFile {
    static let header = "lifeboat-master-key-v1 "

    /// Creates a new key file with a random key. Refuses to overwrite an existing file.
    public static func create(_ path: String) throws {
        if SystemCalls.exists(path) {
            throw LifeboatError(
                "key.exists",
                "key file \(path) already exists: use it with --key-file, or choose another path"
            )
        }
        let text = header + hexString(SystemCalls.randomBytes(32)) + "\n"
        try SystemCalls.writeFileAtomically(path, Array(text.utf8), mode: 0o600)
    }

    static func read(_ path: String) throws -> SymmetricKey {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw LifeboatError(
                "key.missing",
                "key file \(path) does not exist: give the store's key with --key-file or LIFEBOAT_KEY_FILE"
            )
        }
        if st.st_mode & 0o077 != 0 {
            throw LifeboatError(
                "key.permissions",
                "key file \(path) is readable by other users (mode \(String(st.st_mode & 0o777, radix: 8))): run chmod 600 \(path)"
            )
        }
        let bytes = try SystemCalls.readFile(path)
        let words = String(decoding: bytes, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard words.count == 2, words[0] + " " == header,
            let key = StagingStore.bytes(fromHex: String(words[1])), key.count == 32
        else {
            throw LifeboatError("key.invalid", "\(path) is not a Lifeboat master key file")
        }
        return SymmetricKey(data: key)
    }
}
