import LifeboatCore
import NIOSSL
import X509

/// Loads the PEM files a TLS configuration needs and checks them up front, so that a wrong file is reported by
/// name with what to do, instead of as a handshake failure later.
enum TLSFiles {
    struct Authority {
        var certificate: NIOSSLCertificate
        var der: [UInt8]
        var parsed: Certificate
    }

    struct Identity {
        var chain: [NIOSSLCertificate]
        var chainDER: [[UInt8]]
        var leaf: Certificate
        var key: NIOSSLPrivateKey
    }

    static func authority(_ path: String) throws -> Authority {
        let ders = try certificates(path, what: "the CA certificate")
        let parsed = try parse(ders[0], path: path)
        return Authority(certificate: try nioCertificate(ders[0], path: path), der: ders[0], parsed: parsed)
    }

    static func identity(certificatePath: String, keyPath: String) throws -> Identity {
        let ders = try certificates(certificatePath, what: "a certificate")
        let leaf = try parse(ders[0], path: certificatePath)
        let keyPEM = try PKIFiles.read(keyPath, what: "a private key", code: "tls.load")
        let key: NIOSSLPrivateKey
        let checkKey: Certificate.PrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
            checkKey = try Certificate.PrivateKey(pemEncoded: keyPEM)
        } catch {
            throw LifeboatError("tls.load", "\(keyPath) does not hold a PEM private key", cause: error)
        }
        guard checkKey.publicKey == leaf.publicKey else {
            throw LifeboatError(
                "tls.key-mismatch",
                "the private key \(keyPath) does not belong to the certificate \(certificatePath): "
                    + "use the key that was written with it, or issue the certificate again"
            )
        }
        return Identity(
            chain: try ders.map { try nioCertificate($0, path: certificatePath) },
            chainDER: ders,
            leaf: leaf,
            key: key
        )
    }

    /// The leaf must be signed by the CA and valid now: anything else could never complete a handshake.
    static func checkIssued(_ identity: Identity, by ca: Authority, certificatePath: String, caPath: String) throws {
        let leaf = identity.leaf
        guard leaf.issuer == ca.parsed.subject, ca.parsed.publicKey.isValidSignature(leaf.signature, for: leaf) else {
            throw LifeboatError(
                "tls.untrusted-certificate",
                "the certificate \(certificatePath) is not signed by the CA in \(caPath): issue it again with this CA"
            )
        }
        let now = Timestamp.now()
        let notAfter = CertificateInspection.timestamp(leaf.notValidAfter)
        guard now < notAfter else {
            throw LifeboatError(
                "tls.certificate-expired",
                "the certificate \(certificatePath) expired at \(notAfter): issue a new one (agents: enroll again)"
            )
        }
    }

    private static func certificates(_ path: String, what: String) throws -> [[UInt8]] {
        let pem = try PKIFiles.read(path, what: what, code: "tls.load")
        let ders: [[UInt8]]
        do {
            ders = try CertificateInspection.ders(fromPEM: pem)
        } catch {
            throw LifeboatError("tls.load", "\(path) does not hold PEM certificates", cause: error)
        }
        guard !ders.isEmpty else {
            throw LifeboatError("tls.load", "\(path) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        }
        return ders
    }

    private static func parse(_ der: [UInt8], path: String) throws -> Certificate {
        do {
            return try CertificateInspection.parse(der)
        } catch {
            throw LifeboatError(
                "tls.load",
                "the first certificate in \(path) is not a valid X.509 certificate",
                cause: error
            )
        }
    }

    private static func nioCertificate(_ der: [UInt8], path: String) throws -> NIOSSLCertificate {
        do {
            return try NIOSSLCertificate(bytes: der, format: .der)
        } catch {
            throw LifeboatError("tls.load", "a certificate in \(path) cannot be loaded by BoringSSL", cause: error)
        }
    }
}
