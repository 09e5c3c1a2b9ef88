import Crypto
import Foundation

/// Random secrets and their text forms, shared by passwords, access tokens and CSRF secrets.
enum Secrets {
    /// `count` bytes from the system's cryptographically secure generator.
    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// Standard Base64 with padding (RFC 4648 §4).
    static func base64(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
    }

    /// The bytes of standard padded Base64, nil if `text` is not exactly that.
    static func decodeBase64(_ text: String) -> [UInt8]? {
        guard !text.isEmpty, let data = Data(base64Encoded: text) else { return nil }
        let bytes = [UInt8](data)
        // Data accepts some non-canonical forms; only the text we would write ourselves counts.
        return base64(bytes) == text ? bytes : nil
    }

    /// URL-safe Base64 without padding (RFC 4648 §5): 32 bytes become 43 characters.
    static func base64URL(_ bytes: [UInt8]) -> String {
        var text = base64(bytes)
        text = text.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    /// Whether every character of `text` is in the URL-safe Base64 alphabet.
    static func isBase64URL(_ text: Substring) -> Bool {
        text.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }
    }

    /// The lowercase hexadecimal SHA-256 of the UTF-8 bytes of `text`.
    static func sha256Hex(_ text: String) -> String {
        Hex.encode(SHA256.hash(data: Array(text.utf8)))
    }

    /// Whether `a` and `b` are equal, looking at every byte whatever the first difference (the time taken
    /// depends only on the lengths).
    @inline(never)
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<a.count {
            difference |= a[index] ^ b[index]
        }
        return difference == 0
    }
}
