import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

@Suite("Catalog: password hashes")
struct PasswordHashTests {
    @Test("the stored form: scrypt$32768$8$1$<16-byte salt>$<32-byte hash>, a new salt every time")
    func format() throws {
        let stored = try PasswordHash.make(password: "correct horse battery")
        let parts = stored.split(separator: "$", omittingEmptySubsequences: false).map(String.init)
        #expect(parts.count == 6)
        #expect(Array(parts.prefix(4)) == ["scrypt", "32768", "8", "1"])
        #expect(Data(base64Encoded: parts[4])?.count == 16)
        #expect(Data(base64Encoded: parts[5])?.count == 32)
        #expect(PasswordHash.isWellFormed(stored))

        let again = try PasswordHash.make(password: "correct horse battery")
        #expect(again != stored, "a new salt each time")
        #expect(PasswordHash.verify(password: "correct horse battery", stored: again))
    }

    @Test("the right password verifies; a wrong, empty or differently-cased one does not")
    func verification() throws {
        let stored = try PasswordHash.make(password: "correct horse battery")
        #expect(PasswordHash.verify(password: "correct horse battery", stored: stored))
        #expect(!PasswordHash.verify(password: "correct horse batterx", stored: stored))
        #expect(!PasswordHash.verify(password: "Correct horse battery", stored: stored))
        #expect(!PasswordHash.verify(password: "correct horse battery ", stored: stored))
        #expect(!PasswordHash.verify(password: "", stored: stored))
        expectError("password.empty") { _ = try PasswordHash.make(password: "") }
    }

    @Test("a hash computed by another scrypt implementation verifies: the format is standard scrypt")
    func interoperable() throws {
        // Computed independently (Python hashlib.scrypt, N=32768 r=8 p=1, salt "lifeboat-salt-16", 32 bytes).
        let salt = Data("lifeboat-salt-16".utf8).base64EncodedString()
        let stored = "scrypt$32768$8$1$\(salt)$\(Self.pythonHash)"
        #expect(PasswordHash.verify(password: "correct horse battery", stored: stored))
        #expect(!PasswordHash.verify(password: "correct horse batter", stored: stored))
    }

    /// `base64(hashlib.scrypt(b"correct horse battery", salt=b"lifeboat-salt-16", n=32768, r=8, p=1,
    /// maxmem=64 << 20, dklen=32))`.
    static let pythonHash = "5gDlqyCMOFVsFYqnbSETOXU1u9eSF2rWEfjrevLkUj8="

    @Test("malformed stored hashes never verify")
    func malformed() throws {
        let good = try PasswordHash.make(password: "correct horse battery")
        let parts = good.split(separator: "$", omittingEmptySubsequences: false).map(String.init)
        func with(_ index: Int, _ value: String) -> String {
            var copy = parts
            copy[index] = value
            return copy.joined(separator: "$")
        }
        let bad = [
            "", "scrypt", "not a hash", "$$$$$", good + "$", "x" + good,
            with(0, "bcrypt"), with(1, "1000"), with(1, "0"), with(1, "-32768"), with(1, "1099511627776"),
            with(2, "0"), with(2, "x"), with(3, "0"), with(3, "1000"),
            with(4, ""), with(4, "!!!!"), with(4, "AAAA"),
            with(5, ""), with(5, "!!!!"), with(5, String(parts[5].dropLast(2))),
            parts.prefix(5).joined(separator: "$"),
        ]
        for stored in bad {
            #expect(!PasswordHash.isWellFormed(stored), "\(stored)")
            #expect(!PasswordHash.verify(password: "correct horse battery", stored: stored), "\(stored)")
        }
        #expect(PasswordHash.isWellFormed(PasswordHash.dummy))
        #expect(!PasswordHash.verify(password: "correct horse battery", stored: PasswordHash.dummy))
    }

    @Test("comparison looks at every byte: equal arrays only")
    func constantTime() {
        #expect(Secrets.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!Secrets.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!Secrets.constantTimeEqual([9, 2, 3], [1, 2, 3]))
        #expect(!Secrets.constantTimeEqual([1, 2], [1, 2, 3]))
        #expect(Secrets.constantTimeEqual([], []))
    }
}
