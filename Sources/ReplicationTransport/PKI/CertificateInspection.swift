import Crypto
public import LifeboatCore
import SwiftASN1
import X509

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Reads what Lifeboat needs from certificates (DER or PEM) without exposing swift-certificates types.
public enum CertificateInspection {
    /// The serial number as lowercase hex without leading zero bytes (what `openssl x509 -serial` prints, lowercased).
    public static func serial(ofDER der: [UInt8]) throws -> String {
        serialText(try parse(der).serialNumber)
    }

    /// The subject's common name (CN), or nil if the subject has none.
    public static func commonName(ofDER der: [UInt8]) throws -> String? {
        commonName(of: try parse(der).subject)
    }

    /// The end of the certificate's validity period.
    public static func notAfter(ofDER der: [UInt8]) throws -> Timestamp {
        timestamp(try parse(der).notValidAfter)
    }

    /// The subject alternative names: DNS names as written, IP addresses in their usual text form.
    public static func subjectAlternativeNames(ofDER der: [UInt8]) throws -> [String] {
        let certificate = try parse(der)
        let names: SubjectAlternativeNames?
        do {
            names = try certificate.extensions.subjectAlternativeNames
        } catch {
            throw LifeboatError(
                "pki.bad-certificate",
                "the certificate's subject alternative names are malformed",
                cause: error
            )
        }
        return (names ?? SubjectAlternativeNames()).compactMap { name -> String? in
            switch name {
            case .dnsName(let dns): return dns
            case .ipAddress(let octets): return HostNames.text(ofAddress: Array(octets.bytes))
            default: return nil
            }
        }
    }

    /// Lowercase hex SHA-256 of the DER bytes (64 characters): the CA fingerprint an agent pins.
    public static func fingerprint(ofDER der: [UInt8]) -> String {
        hex(SHA256.hash(data: der))
    }

    /// One certificate as PEM text (ends with a newline).
    public static func pem(fromDER der: [UInt8]) -> String {
        PEMDocument(type: "CERTIFICATE", derBytes: der).pemString + "\n"
    }

    /// The DER bytes of the first certificate in PEM text.
    public static func der(fromPEM pem: String) throws -> [UInt8] {
        guard let first = try ders(fromPEM: pem).first else {
            throw LifeboatError(
                "pki.bad-certificate",
                "the text holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            )
        }
        return first
    }

    /// The DER bytes of every certificate in PEM text, in order (a chain file yields several).
    public static func ders(fromPEM pem: String) throws -> [[UInt8]] {
        do {
            return try PEMDocument.parseMultiple(pemString: pem)
                .filter { $0.discriminator == "CERTIFICATE" }
                .map(\.derBytes)
        } catch {
            throw LifeboatError("pki.bad-certificate", "the PEM text is malformed", cause: error)
        }
    }

    // MARK: - Shared with the rest of the PKI code

    static func parse(_ der: [UInt8]) throws -> Certificate {
        do {
            return try Certificate(derEncoded: der)
        } catch {
            throw LifeboatError(
                "pki.bad-certificate",
                "the bytes are not a valid X.509 certificate (DER)",
                cause: error
            )
        }
    }

    static func serialize(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    static func serialText(_ serial: Certificate.SerialNumber) -> String {
        hex(serial.bytes.drop(while: { $0 == 0 }))
    }

    static func commonName(of name: DistinguishedName) -> String? {
        for rdn in name {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                return String(attribute.value) ?? attribute.value.description
            }
        }
        return nil
    }

    static func timestamp(_ date: Date) -> Timestamp {
        Timestamp(nanoseconds: Int64((date.timeIntervalSince1970 * 1_000_000_000).rounded()))
    }

    static func date(_ timestamp: Timestamp) -> Date {
        Date(timeIntervalSince1970: Double(timestamp.nanoseconds) / 1_000_000_000)
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
