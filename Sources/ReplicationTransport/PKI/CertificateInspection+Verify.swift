import LifeboatCore
import X509

extension CertificateInspection {
    /// The role a certificate must be issued for.
    public enum Purpose: String, Sendable {
        /// The replication server's TLS certificate (extended key usage serverAuth).
        case server
        /// An agent's client certificate (extended key usage clientAuth).
        case client
    }

    /// Checks with swift-certificates' `Verifier` (RFC 5280: signature, validity, CA constraints) that `leafDER` is
    /// signed directly by the CA `caDER` and issued for `purpose`; throws `pki.untrusted` saying why not.
    public static func verify(leafDER: [UInt8], caDER: [UInt8], purpose: Purpose) async throws {
        let leaf = try parse(leafDER)
        let ca = try parse(caDER)
        let leafName = "'\(commonName(of: leaf.subject) ?? "")' (serial \(serialText(leaf.serialNumber)))"
        let caName = "'\(commonName(of: ca.subject) ?? "")'"
        guard leaf.issuer == ca.subject, ca.publicKey.isValidSignature(leaf.signature, for: leaf) else {
            throw LifeboatError("pki.untrusted", "the certificate \(leafName) is not signed by the CA \(caName)")
        }
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) { RFC5280Policy() }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore())
        guard case .validCertificate = result else {
            var reasons: [String] = []
            if case .couldNotValidate(let failures) = result {
                reasons = failures.map { String(describing: $0.policyFailureReason) }
            }
            let why = reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; ")
            throw LifeboatError(
                "pki.untrusted",
                "the certificate \(leafName) does not validate against the CA \(caName) (expired or not yet valid, "
                    + "or the CA may not sign it)\(why)"
            )
        }
        let wanted: ExtendedKeyUsage.Usage = purpose == .server ? .serverAuth : .clientAuth
        let usages = try? leaf.extensions.extendedKeyUsage
        guard let usages, usages.contains(wanted) else {
            throw LifeboatError(
                "pki.untrusted",
                "the certificate \(leafName) is not a \(purpose.rawValue) certificate "
                    + "(its extended key usage lacks \(purpose == .server ? "serverAuth" : "clientAuth"))"
            )
        }
    }
}
