import LifeboatCore
public import Logging
public import NIOCore
public import NIOSSL

/// The TLS configurations of the replication link: TLS 1.3 only, trust in the Lifeboat CA only.
///
/// Cipher suites: TLS_AES_256_GCM_SHA384 only, set on the context by `makeContext` (TLSSetup+Suites.swift) —
/// TLSConfiguration's `cipherSuites` only reaches TLS 1.2 and older, which are disabled here. Make every context
/// for these configurations with `makeContext`.
public enum TLSSetup {
    /// Server: its certificate chain [server, CA] and key, client certificates optional but, when presented, they
    /// must chain to the CA (a client without one may only enroll; the session code enforces that).
    public static func serverConfiguration(
        certificatePEMPath: String,
        keyPEMPath: String,
        caPEMPath: String
    ) throws -> TLSConfiguration {
        let ca = try TLSFiles.authority(caPEMPath)
        let identity = try TLSFiles.identity(certificatePath: certificatePEMPath, keyPath: keyPEMPath)
        try TLSFiles.checkIssued(identity, by: ca, certificatePath: certificatePEMPath, caPath: caPEMPath)
        var chain = identity.chain
        if !identity.chainDER.contains(ca.der) { chain.append(ca.certificate) }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(identity.key)
        )
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        configuration.trustRoots = .certificates([ca.certificate])
        configuration.certificateVerification = .optionalVerification
        return configuration
    }

    /// The NBD server that serves recovery instances' disks: the server certificate, TLS 1.3 only, a client
    /// certificate required (the NBD server pins which one: `NBDServer.Configuration.allowedClientCertificates`).
    public static func nbdServerConfiguration(certificatePEMPath: String, keyPEMPath: String, caPEMPath: String) throws -> TLSConfiguration {
        var configuration = try serverConfiguration(certificatePEMPath: certificatePEMPath, keyPEMPath: keyPEMPath, caPEMPath: caPEMPath)
        configuration.certificateVerification = .noHostnameVerification
        return configuration
    }

    /// Agent after enrollment: its client certificate and key, trust in the CA only, full verification of the server
    /// name: give the client handler `serverHostname(for: host)`, where host is a name or IP address in the server
    /// certificate (for an IP address NIOSSL checks the peer's address against the certificate's IP SANs).
    public static func agentConfiguration(
        certificatePEMPath: String,
        keyPEMPath: String,
        caPEMPath: String
    ) throws -> TLSConfiguration {
        let ca = try TLSFiles.authority(caPEMPath)
        let identity = try TLSFiles.identity(certificatePath: certificatePEMPath, keyPath: keyPEMPath)
        try TLSFiles.checkIssued(identity, by: ca, certificatePath: certificatePEMPath, caPath: caPEMPath)
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        configuration.certificateChain = identity.chain.map { .certificate($0) }
        configuration.privateKey = .privateKey(identity.key)
        configuration.trustRoots = .certificates([ca.certificate])
        configuration.certificateVerification = .fullVerification
        return configuration
    }

    /// Agent during enrollment: no client certificate; the server is trusted only if its chain holds the CA whose
    /// SHA-256 is `caFingerprint` and its leaf is a server certificate signed by that CA (the host name is not
    /// checked: the pin is stronger). Make the client handler with
    /// `verifier.makeClientHandler(context:serverHostname:)`.
    public static func enrollmentConfiguration(
        caFingerprint: String,
        logger: Logger = Logger(label: "lifeboat.tls.enrollment")
    ) throws -> (configuration: TLSConfiguration, verifier: PinnedAuthorityVerifier) {
        let verifier = try PinnedAuthorityVerifier(caFingerprint: caFingerprint, logger: logger)
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        configuration.trustRoots = .certificates([])
        // Anything but `.none`, so that NIOSSL runs the custom callback, which replaces BoringSSL's verification.
        configuration.certificateVerification = .noHostnameVerification
        return (configuration, verifier)
    }

    /// The `serverHostname` for NIOSSLClientHandler: the host name itself, nil for an IP address (which TLS may not
    /// send as SNI; NIOSSL then matches the connected address against the certificate's IP SANs).
    public static func serverHostname(for host: String) -> String? {
        HostNames.address(of: host) == nil ? host : nil
    }

    /// The peer's leaf certificate (DER) once the handshake is done, nil if it presented none.
    public static func peerCertificateDER(of channel: any Channel) -> EventLoopFuture<[UInt8]?> {
        channel.nioSSL_peerCertificate().flatMapThrowing { certificate in
            try certificate?.toDERBytes()
        }
    }

    /// The negotiated TLS version once the handshake is done (always TLS 1.3 with these configurations).
    public static func negotiatedVersion(of channel: any Channel) -> EventLoopFuture<TLSVersion?> {
        channel.nioSSL_tlsVersion()
    }
}
