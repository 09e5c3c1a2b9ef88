import CNIOBoringSSL
import LifeboatCore
public import NIOSSL

extension TLSSetup {
    /// The only TLS 1.3 cipher suite of the replication link: TLS_AES_256_GCM_SHA384.
    static let tls13Suites: [UInt16] = [UInt16(SSL_CIPHER_AES_256_GCM_SHA384)]

    /// A context for one of this file's configurations, restricted to TLS_AES_256_GCM_SHA384: a peer that offers
    /// no AES-256-GCM suite fails the handshake (`NO_SHARED_CIPHER`). Blocking (it may read files): not on an
    /// event loop.
    ///
    /// swift-nio-ssl 2.37 has no setting for the TLS 1.3 suites (`cipherSuites` only reaches TLS 1.2), but its
    /// BoringSSL has `SSL_CTX_set1_tls13_ciphers`. The `SSL_CTX` is the context's one stored pointer, which is
    /// read by reflection; if a later swift-nio-ssl stores it differently this throws — no context is ever
    /// returned unrestricted — and TLSTests (an `openssl s_client` offering only AES-128-GCM must be refused)
    /// fails.
    public static func makeContext(_ configuration: TLSConfiguration) throws -> NIOSSLContext {
        let context = try NIOSSLContext(configuration: configuration)
        let pointers = Mirror(reflecting: context).children.compactMap { $0.value as? OpaquePointer }
        guard pointers.count == 1, let sslContext = pointers.first else {
            throw LifeboatError(
                "tls.suites",
                "cannot restrict TLS 1.3 to AES-256-GCM: this swift-nio-ssl stores its SSL_CTX differently (found \(pointers.count) pointers)"
            )
        }
        let suites = tls13Suites
        let set = suites.withUnsafeBufferPointer { SSL_CTX_set1_tls13_ciphers(sslContext, $0.baseAddress, nil, $0.count) }
        guard set == 1 else {
            throw LifeboatError("tls.suites", "BoringSSL refused the TLS 1.3 suite list (TLS_AES_256_GCM_SHA384)")
        }
        return context
    }
}
