import Crypto
public import LifeboatCore
import SwiftASN1
import X509

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The replication server's certificate authority: a self-signed ECDSA P-384 CA (10 years, path length 0)
/// that signs the server's TLS certificate and the agents' client certificates.
public struct CertificateAuthority: Sendable {
    let certificate: Certificate
    let privateKey: Certificate.PrivateKey
    /// The CA certificate in DER.
    public let certificateDER: [UInt8]

    /// How long the CA is valid: 10 years.
    public static let validityDays: Int64 = 3653
    /// How long server and agent certificates are valid: 2 years.
    public static let leafValidityDays: Int64 = 731
    /// How far back `notBefore` is set, so that a peer whose clock is a little behind accepts a fresh certificate.
    public static let backdatingSeconds: Int64 = 3600

    init(certificate: Certificate, privateKey: Certificate.PrivateKey) throws {
        self.certificate = certificate
        self.privateKey = privateKey
        self.certificateDER = try CertificateInspection.serialize(certificate)
    }

    /// Creates a new CA with a fresh P-384 key; `commonName` names it in certificates (e.g. "Lifeboat CA backup-1")
    /// and is cut to X.509's 64-byte limit for common names.
    public static func create(
        commonName: String,
        clock: any WallClock = SystemWallClock()
    ) throws -> CertificateAuthority {
        guard !commonName.isEmpty else {
            throw LifeboatError("pki.bad-name", "the CA needs a common name")
        }
        var shortened = ""
        for character in commonName where shortened.utf8.count + String(character).utf8.count <= 64 {
            shortened.append(character)
        }
        let key = Certificate.PrivateKey(P384.Signing.PrivateKey())
        let name = try DistinguishedName { CommonName(shortened) }
        let now = clock.now()
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: key.publicKey)
        }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: randomSerial(),
            publicKey: key.publicKey,
            notValidBefore: CertificateInspection.date(Timestamp(seconds: now.seconds - backdatingSeconds)),
            notValidAfter: CertificateInspection.date(Timestamp(seconds: now.seconds + validityDays * 86400)),
            issuer: name,
            subject: name,
            extensions: extensions,
            issuerPrivateKey: key
        )
        return try CertificateAuthority(certificate: certificate, privateKey: key)
    }

    /// Loads a CA written by `write`; `pki.load` errors name the file that is missing, unreadable or wrong.
    public static func load(certificatePath: String, keyPath: String) throws -> CertificateAuthority {
        let certificatePEM = try PKIFiles.read(certificatePath, what: "the CA certificate")
        let keyPEM = try PKIFiles.read(keyPath, what: "the CA private key")
        let certificate: Certificate
        do {
            certificate = try CertificateInspection.parse(CertificateInspection.der(fromPEM: certificatePEM))
        } catch {
            throw LifeboatError("pki.load", "\(certificatePath) does not hold a PEM certificate", cause: error)
        }
        let key: Certificate.PrivateKey
        do {
            key = try Certificate.PrivateKey(pemEncoded: keyPEM)
        } catch {
            throw LifeboatError("pki.load", "\(keyPath) does not hold a PEM private key", cause: error)
        }
        guard key.publicKey == certificate.publicKey else {
            throw LifeboatError(
                "pki.load",
                "the private key \(keyPath) does not belong to the certificate \(certificatePath): "
                    + "restore the pair that was written together"
            )
        }
        guard case .isCertificateAuthority = try? certificate.extensions.basicConstraints else {
            throw LifeboatError(
                "pki.load",
                "\(certificatePath) is not a CA certificate (basicConstraints CA is not set)"
            )
        }
        return try CertificateAuthority(certificate: certificate, privateKey: key)
    }

    /// Writes the certificate (mode 0644) and the private key (mode 0600), each atomically.
    public func write(certificatePath: String, keyPath: String) throws {
        let keyPEM = try privateKey.serializeAsPEM().pemString
        try PKIFiles.writePrivateKey(keyPEM, to: keyPath)
        try PKIFiles.writeCertificate(certificatePEM, to: certificatePath)
    }

    /// The CA certificate as PEM text.
    public var certificatePEM: String { CertificateInspection.pem(fromDER: certificateDER) }

    /// Lowercase hex SHA-256 of the CA certificate's DER: what an enrolling agent pins.
    public var fingerprint: String { CertificateInspection.fingerprint(ofDER: certificateDER) }

    /// The CA's common name.
    public var commonName: String { CertificateInspection.commonName(of: certificate.subject) ?? "" }

    /// A 128-bit random serial: 16 random bytes with the top bit cleared (a positive INTEGER of at most 16 octets).
    static func randomSerial() -> Certificate.SerialNumber {
        var bytes = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &generator) }
        bytes[0] &= 0x7f
        return Certificate.SerialNumber(bytes: bytes)
    }
}
