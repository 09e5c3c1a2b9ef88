public import LifeboatCore
public import Logging
public import NIOCore
public import NIOSSL

/// The enrolling agent's check of the server, replacing BoringSSL's: the presented chain must contain the CA whose
/// SHA-256 is pinned, and the leaf must be a server certificate signed by that CA and valid now.
public final class PinnedAuthorityVerifier: @unchecked Sendable {
    /// The pinned CA fingerprint: lowercase hex SHA-256 of the CA certificate's DER.
    public let caFingerprint: String
    private let logger: Logger
    private let lock = PlainLock()
    private var lastFailure: LifeboatError?

    /// Accepts the fingerprint in lowercase or uppercase hex, with or without ':' separators.
    public init(caFingerprint: String, logger: Logger) throws {
        let normalized = String(caFingerprint.lowercased().filter { $0 != ":" })
        guard normalized.utf8.count == 64,
            normalized.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) })
        else {
            throw LifeboatError(
                "tls.bad-fingerprint",
                "'\(caFingerprint)' is not a CA fingerprint: "
                    + "give the 64 hex digits (SHA-256) the replication server prints"
            )
        }
        self.caFingerprint = normalized
        self.logger = logger
    }

    /// Why the last handshake was refused, as an error a person can act on (nil if none was).
    public var failure: LifeboatError? { lock.withLock { lastFailure } }

    /// A client handler that verifies the server with this verifier (`serverHostname` is only sent as SNI).
    public func makeClientHandler(context: NIOSSLContext, serverHostname: String?) throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: context, serverHostname: serverHostname, customVerificationCallback: verify)
    }

    /// The NIOSSL custom verification callback.
    public func verify(_ certificates: [NIOSSLCertificate], _ promise: EventLoopPromise<NIOSSLVerificationResult>) {
        let chain: [[UInt8]]
        do {
            chain = try certificates.map { try $0.toDERBytes() }
        } catch {
            refuse(LifeboatError("tls.untrusted-server", "the server's certificates cannot be read", cause: error))
            promise.succeed(.failed)
            return
        }
        promise.completeWithTask {
            if let failure = await self.check(chainDER: chain) {
                self.refuse(failure)
                return .failed
            }
            return .certificateVerified
        }
    }

    /// The whole decision, on DER bytes: nil when the chain is trusted, otherwise why not.
    public func check(chainDER chain: [[UInt8]]) async -> LifeboatError? {
        guard let leaf = chain.first else {
            return LifeboatError("tls.untrusted-server", "the server presented no certificate")
        }
        guard let ca = chain.first(where: { CertificateInspection.fingerprint(ofDER: $0) == caFingerprint }) else {
            let presented = chain.map { CertificateInspection.fingerprint(ofDER: $0) }.joined(separator: ", ")
            return LifeboatError(
                "tls.pin-mismatch",
                "the server's certificate chain does not contain the CA \(caFingerprint) (it presented \(presented)): "
                    + "check the fingerprint against the one the replication server prints, and the server address"
            )
        }
        do {
            try await CertificateInspection.verify(leafDER: leaf, caDER: ca, purpose: .server)
            return nil
        } catch {
            return LifeboatError(
                "tls.untrusted-server",
                "the server's certificate is not trusted under the pinned CA: this may not be your replication server",
                cause: error
            )
        }
    }

    private func refuse(_ failure: LifeboatError) {
        lock.withLock { lastFailure = failure }
        logger.error("refused the replication server during enrollment", metadata: ["error": "\(failure)"])
    }
}
