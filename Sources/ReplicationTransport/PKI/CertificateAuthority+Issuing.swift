import Crypto
public import LifeboatCore
import SwiftASN1
import X509

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

extension CertificateAuthority {
    /// Issues the server's TLS certificate for a fresh P-256 key: serverAuth, a SAN for every name (DNS names and
    /// IP addresses such as "localhost", "127.0.0.1", "::1"), CN = the first name, 2 years.
    public func issueServerCertificate(
        names: [String],
        clock: any WallClock = SystemWallClock()
    ) throws -> (certificatePEM: String, privateKeyPEM: String) {
        var unique: [String] = []
        for name in names where !unique.contains(name) { unique.append(name) }
        guard let first = unique.first else {
            throw LifeboatError(
                "pki.bad-name",
                "a server certificate needs at least one name (host name or IP address)"
            )
        }
        let sans = try unique.map(HostNames.generalName(for:))
        let key = P256.Signing.PrivateKey()
        let certificate = try issue(
            subject: try DistinguishedName { CommonName(first) },
            publicKey: Certificate.PublicKey(key.publicKey),
            usage: .serverAuth,
            extra: SubjectAlternativeNames(sans),
            clock: clock
        )
        let der = try CertificateInspection.serialize(certificate)
        return (CertificateInspection.pem(fromDER: der), PKIFiles.terminated(key.pemRepresentation))
    }

    /// Issues the server certificate and writes it (0644) and its private key (0600).
    public func writeServerCertificate(
        names: [String],
        certificatePath: String,
        keyPath: String,
        clock: any WallClock = SystemWallClock()
    ) throws {
        let issued = try issueServerCertificate(names: names, clock: clock)
        try PKIFiles.writePrivateKey(issued.privateKeyPEM, to: keyPath)
        try PKIFiles.writeCertificate(issued.certificatePEM, to: certificatePath)
    }

    /// Signs an agent's CSR after checking its self-signature (`pki.bad-csr` otherwise); only the CSR's public key
    /// is used: the certificate gets CN = `machine`, clientAuth, a random 128-bit serial and 2 years of validity.
    public func signClientCertificate(
        csrDER: [UInt8],
        machine: String,
        clock: any WallClock = SystemWallClock()
    ) throws -> IssuedCertificate {
        try Names.validate(machine, kind: "machine")
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(derEncoded: csrDER)
        } catch {
            throw LifeboatError(
                "pki.bad-csr",
                "the agent's certificate signing request is not valid DER: run the enrollment again",
                cause: error
            )
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw LifeboatError(
                "pki.bad-csr",
                "the signature of the agent's certificate signing request does not match its key "
                    + "(altered or corrupted on the way): run the enrollment again"
            )
        }
        guard P256.Signing.PublicKey(csr.publicKey) != nil || P384.Signing.PublicKey(csr.publicKey) != nil else {
            throw LifeboatError(
                "pki.bad-csr",
                "the agent's key is \(csr.publicKey); agents must use ECDSA P-256 or P-384 keys"
            )
        }
        let certificate = try issue(
            subject: try DistinguishedName { CommonName(machine) },
            publicKey: csr.publicKey,
            usage: .clientAuth,
            extra: nil,
            clock: clock
        )
        let der = try CertificateInspection.serialize(certificate)
        return IssuedCertificate(
            der: der,
            pem: CertificateInspection.pem(fromDER: der),
            serial: CertificateInspection.serialText(certificate.serialNumber),
            commonName: machine,
            notAfter: CertificateInspection.timestamp(certificate.notValidAfter)
        )
    }

    /// Signs an end-entity certificate: not a CA, digitalSignature, one extended key usage, never outliving the CA.
    private func issue(
        subject: DistinguishedName,
        publicKey: Certificate.PublicKey,
        usage: ExtendedKeyUsage.Usage,
        extra: SubjectAlternativeNames?,
        clock: any WallClock
    ) throws -> Certificate {
        let now = clock.now()
        let caNotAfter = CertificateInspection.timestamp(certificate.notValidAfter)
        guard now < caNotAfter else {
            throw LifeboatError(
                "pki.ca-expired",
                "the CA '\(commonName)' expired at \(caNotAfter): create a new CA and enroll the agents again"
            )
        }
        let notAfter = min(Timestamp(seconds: now.seconds + Self.leafValidityDays * 86400), caNotAfter)
        let authorityKeyID =
            (try? certificate.extensions.subjectKeyIdentifier)?.keyIdentifier
            ?? SubjectKeyIdentifier(hash: certificate.publicKey).keyIdentifier
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([usage])
            SubjectKeyIdentifier(hash: publicKey)
            AuthorityKeyIdentifier(keyIdentifier: authorityKeyID)
            if let extra { extra }
        }
        return try Certificate(
            version: .v3,
            serialNumber: Self.randomSerial(),
            publicKey: publicKey,
            notValidBefore: CertificateInspection.date(Timestamp(seconds: now.seconds - Self.backdatingSeconds)),
            notValidAfter: CertificateInspection.date(notAfter),
            issuer: certificate.subject,
            subject: subject,
            extensions: extensions,
            issuerPrivateKey: privateKey
        )
    }
}
