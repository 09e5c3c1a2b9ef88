import Crypto
import LifeboatCore
import SwiftASN1
import X509

/// The agent's own ECDSA P-256 key pair, generated on the agent; the private key never leaves it.
public struct AgentKey: Sendable {
    let key: P256.Signing.PrivateKey

    /// A fresh key pair.
    public static func generate() -> AgentKey {
        AgentKey(key: P256.Signing.PrivateKey())
    }

    /// Loads a key written by `write`; `pki.load` errors name the file.
    public static func load(path: String) throws -> AgentKey {
        let pem = try PKIFiles.read(path, what: "the agent's private key")
        do {
            return AgentKey(key: try P256.Signing.PrivateKey(pemRepresentation: pem))
        } catch {
            throw LifeboatError(
                "pki.load",
                "\(path) does not hold a P-256 private key in PEM: remove it and enroll the agent again",
                cause: error
            )
        }
    }

    /// Writes the private key as PKCS#8 PEM with mode 0600, atomically.
    public func write(path: String) throws {
        try PKIFiles.writePrivateKey(key.pemRepresentation, to: path)
    }

    /// A PKCS#10 request (DER) for CN = `machine`, signed by this key; the CA decides everything else.
    public func certificateSigningRequest(machine: String) throws -> [UInt8] {
        try Names.validate(machine, kind: "machine")
        let request = try CertificateSigningRequest(
            version: .v1,
            subject: try DistinguishedName { CommonName(machine) },
            privateKey: Certificate.PrivateKey(key),
            attributes: CertificateSigningRequest.Attributes()
        )
        var serializer = DER.Serializer()
        try serializer.serialize(request)
        return serializer.serializedBytes
    }

    /// Whether a certificate (DER) carries this key's public key: check an issued certificate before storing it.
    public func matches(certificateDER: [UInt8]) -> Bool {
        guard let certificate = try? CertificateInspection.parse(certificateDER) else { return false }
        return certificate.publicKey == Certificate.PublicKey(key.publicKey)
    }
}
