import Crypto
import CryptoExtras
import LifeboatCore

/// Password hashes as stored in the catalog: scrypt with N = 32768, r = 8, p = 1 (about 32 MiB and a tenth of
/// a second per attempt), a 16-byte random salt and a 32-byte result, written as
/// `scrypt$32768$8$1$<salt base64>$<hash base64>` (standard Base64 with padding).
///
/// The parameters travel with each hash, so stronger ones can be chosen later without invalidating the
/// passwords people already have.
public enum PasswordHash {
    /// scrypt's cost N (the "rounds" of `KDF.Scrypt`).
    public static let rounds = 32768
    /// scrypt's block size r.
    public static let blockSize = 8
    /// scrypt's parallelism p.
    public static let parallelism = 1
    static let saltLength = 16
    static let hashLength = 32

    /// A well-formed hash that no password produces in practice: verified against when a user is unknown, so
    /// that a wrong user name costs as much time as a wrong password and timing does not reveal which names exist.
    public static let dummy = "scrypt$32768$8$1$bGlmZWJvYXQtZHVtbXkhIQ==$9fVLfh4Q2sVb3JxUPZ0dxmjYbWbyBX+5cfF8c2DcXzE="

    /// Hashes `password` with a new random salt.
    ///
    /// - Throws: `password.empty` for an empty password, `password.hash-failed` if scrypt fails (out of memory).
    public static func make(password: String) throws -> String {
        let bytes = Array(password.utf8)
        guard !bytes.isEmpty else {
            throw LifeboatError("password.empty", "a password must not be empty: choose one of at least 12 characters")
        }
        let salt = Secrets.randomBytes(saltLength)
        let hash = try derive(
            bytes,
            salt: salt,
            rounds: rounds,
            blockSize: blockSize,
            parallelism: parallelism,
            length: hashLength
        )
        return [
            "scrypt", String(rounds), String(blockSize), String(parallelism), Secrets.base64(salt),
            Secrets.base64(hash),
        ]
        .joined(separator: "$")
    }

    /// Whether `password` is the one `stored` was made from. The comparison looks at every byte; a malformed
    /// `stored` never verifies (and still costs one scrypt with the default parameters).
    public static func verify(password: String, stored: String) -> Bool {
        guard let parsed = Parsed(stored) else {
            _ = try? derive(
                Array("not a password".utf8),
                salt: Array(repeating: 0, count: saltLength),
                rounds: rounds,
                blockSize: blockSize,
                parallelism: parallelism,
                length: hashLength
            )
            return false
        }
        var bytes = Array(password.utf8)
        let empty = bytes.isEmpty
        // scrypt needs at least one byte; an empty password is computed on a stand-in and then refused.
        if empty { bytes = [0] }
        guard
            let computed = try? derive(
                bytes,
                salt: parsed.salt,
                rounds: parsed.rounds,
                blockSize: parsed.blockSize,
                parallelism: parsed.parallelism,
                length: parsed.hash.count
            )
        else { return false }
        let equal = Secrets.constantTimeEqual(computed, parsed.hash)
        return equal && !empty
    }

    /// Whether `stored` has the form `make` writes (any acceptable parameters).
    public static func isWellFormed(_ stored: String) -> Bool { Parsed(stored) != nil }

    private static func derive(
        _ password: [UInt8],
        salt: [UInt8],
        rounds: Int,
        blockSize: Int,
        parallelism: Int,
        length: Int
    ) throws -> [UInt8] {
        do {
            let key = try KDF.Scrypt.deriveKey(
                from: password,
                salt: salt,
                outputByteCount: length,
                rounds: rounds,
                blockSize: blockSize,
                parallelism: parallelism
            )
            return key.withUnsafeBytes { Array($0) }
        } catch {
            throw LifeboatError(
                "password.hash-failed",
                "hashing a password with scrypt failed: check free memory",
                cause: error
            )
        }
    }

    /// The parts of a stored hash, with bounds that keep a damaged or hostile value from costing unbounded
    /// memory or time.
    private struct Parsed {
        var rounds: Int
        var blockSize: Int
        var parallelism: Int
        var salt: [UInt8]
        var hash: [UInt8]

        init?(_ stored: String) {
            let parts = stored.split(separator: "$", omittingEmptySubsequences: false)
            guard parts.count == 6, parts[0] == "scrypt",
                let n = Int(parts[1]), let r = Int(parts[2]), let p = Int(parts[3]),
                (2...(1 << 20)).contains(n), n & (n - 1) == 0,
                (1...32).contains(r), (1...16).contains(p), 128 * n * r * p <= 1 << 30,
                let salt = Secrets.decodeBase64(String(parts[4])), salt.count >= 8,
                let hash = Secrets.decodeBase64(String(parts[5])), (16...64).contains(hash.count)
            else { return nil }
            self.rounds = n
            self.blockSize = r
            self.parallelism = p
            self.salt = salt
            self.hash = hash
        }
    }
}
