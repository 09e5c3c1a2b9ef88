public import LifeboatCore

/// A certificate the CA has just signed for an agent.
public struct IssuedCertificate: Sendable, Hashable {
    /// The certificate in DER.
    public var der: [UInt8]
    /// The certificate as PEM text.
    public var pem: String
    /// The serial number, lowercase hex: the key for revocation.
    public var serial: String
    /// The subject's common name: the machine name.
    public var commonName: String
    /// The end of the validity period.
    public var notAfter: Timestamp

    /// Makes the record of an issued certificate from its parts.
    public init(der: [UInt8], pem: String, serial: String, commonName: String, notAfter: Timestamp) {
        self.der = der
        self.pem = pem
        self.serial = serial
        self.commonName = commonName
        self.notAfter = notAfter
    }
}
