import LifeboatCore
import SwiftASN1
import X509

#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Musl)
    @preconcurrency import Musl
#endif

/// Turns the names a server is reached by into subject alternative names, and IP addresses back into text.
enum HostNames {
    /// A DNS name SAN for a host name, an IP address SAN for an IPv4 or IPv6 literal.
    static func generalName(for name: String) throws -> GeneralName {
        if let address = address(of: name) {
            return .ipAddress(ASN1OctetString(contentBytes: address[...]))
        }
        let bytes = Array(name.utf8)
        let valid =
            !bytes.isEmpty && bytes.count <= 253 && bytes.first != UInt8(ascii: ".") && bytes.first != UInt8(ascii: "-")
            && bytes.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                    || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
            }
        guard valid else {
            throw LifeboatError(
                "pki.bad-name",
                "'\(name)' is neither an IP address nor a DNS name (letters, digits, '-' and '.'): "
                    + "give the names agents use to reach the server"
            )
        }
        return .dnsName(name.lowercased())
    }

    /// The 4 or 16 bytes of an IPv4 or IPv6 literal, nil for anything else.
    static func address(of text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// The usual text form of a 4- or 16-byte address (`127.0.0.1`, `::1`).
    static func text(ofAddress bytes: [UInt8]) -> String {
        let family: Int32
        switch bytes.count {
        case 4: family = AF_INET
        case 16: family = AF_INET6
        default: return CertificateInspection.hex(bytes)
        }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return CertificateInspection.hex(bytes) }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
