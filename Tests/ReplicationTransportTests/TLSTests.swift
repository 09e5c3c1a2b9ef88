import LifeboatCore
import LifeboatTesting
import NIOCore
import NIOPosix
import Foundation
import NIOSSL
import ReplicationTransport
import Testing

/// Real TLS handshakes over loopback: a server that answers every completed handshake with one line naming the
/// client certificate it saw, and clients with each of the configurations.
@Suite("TLS: configurations and handshakes over loopback", .serialized)
struct TLSTests {
    @Test(arguments: ["localhost", "127.0.0.1"])
    func agentWithItsClientCertificateIsSeenByTheServer(host: String) async throws {
        let pki = try TestPKI()
        let server = try await ProbeServer.start(try pki.serverConfiguration())
        defer { server.close() }
        let reply = try await ProbeClient.exchange(
            port: server.port,
            configuration: try pki.agentConfiguration(),
            hostname: TLSSetup.serverHostname(for: host)
        )
        #expect(reply == "peer serial=\(pki.agent.serial) cn=web-1")
    }

    @Test func longMachineAndCANamesStillMakeWorkingCertificates() async throws {
        // Machine names may have 128 characters (more than X.509's suggested 64 for a CN); CA names are shortened.
        let machine = String(repeating: "m", count: 120) + "-web"
        let pki = try TestPKI(
            caName: "Lifeboat replication CA (" + String(repeating: "h", count: 200) + ")",
            machine: machine
        )
        #expect(pki.ca.commonName.utf8.count == 64)
        let server = try await ProbeServer.start(try pki.serverConfiguration())
        defer { server.close() }
        let reply = try await ProbeClient.exchange(
            port: server.port,
            configuration: try pki.agentConfiguration(),
            hostname: "localhost"
        )
        #expect(reply == "peer serial=\(pki.agent.serial) cn=\(machine)")
        let verify = try PKITestTools.openssl([
            "verify", "-CAfile", pki.dir.child("ca.pem"), "-purpose", "sslclient", pki.dir.child("agent.pem"),
        ])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    @Test func agentChecksThatTheServerCertificateNamesTheHost() async throws {
        let pki = try TestPKI()
        // No IP SAN here: NIOSSL accepts a certificate whose IP SAN is the connected address, whatever the host name.
        let d = pki.dir
        try pki.ca.writeServerCertificate(
            names: ["backup-1.example.com"],
            certificatePath: d.child("named.pem"),
            keyPath: d.child("named.key")
        )
        let server = try await ProbeServer.start(
            try TLSSetup.serverConfiguration(
                certificatePEMPath: d.child("named.pem"),
                keyPEMPath: d.child("named.key"),
                caPEMPath: d.child("ca.pem")
            )
        )
        defer { server.close() }
        let reply = try await ProbeClient.exchange(
            port: server.port,
            configuration: try pki.agentConfiguration(),
            hostname: "backup-1.example.com"
        )
        #expect(reply.hasPrefix("peer serial="))
        await ProbeClient.expectRefused(
            port: server.port,
            configuration: try pki.agentConfiguration(),
            hostname: "localhost"
        )
    }

    @Test func clientWithoutCertificateMayConnectAndTheServerSeesNone() async throws {
        let pki = try TestPKI()
        let server = try await ProbeServer.start(try pki.serverConfiguration())
        defer { server.close() }
        let (configuration, verifier) = try TLSSetup.enrollmentConfiguration(caFingerprint: pki.ca.fingerprint)
        let reply = try await ProbeClient.exchange(port: server.port, configuration: configuration, verifier: verifier)
        #expect(reply == "peer none")
        #expect(verifier.failure == nil)
    }

    @Test func clientCertificateFromAnotherCAIsRefused() async throws {
        let pki = try TestPKI()
        let server = try await ProbeServer.start(try pki.serverConfiguration())
        defer { server.close() }
        // A certificate for a key the agent really holds, but signed by a CA the server does not trust.
        let key = AgentKey.generate()
        let foreign = try pki.stranger.signClientCertificate(
            csrDER: try key.certificateSigningRequest(machine: "web-1"),
            machine: "web-1"
        )
        try key.write(path: pki.dir.child("foreign.key"))
        try FileTools.write(pki.dir.child("foreign.pem"), Array(foreign.pem.utf8))
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateChain = [.certificate(try NIOSSLCertificate(bytes: foreign.der, format: .der))]
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: pki.dir.child("foreign.key"), format: .pem))
        configuration.trustRoots = .file(pki.dir.child("ca.pem"))
        await ProbeClient.expectRefused(port: server.port, configuration: configuration, hostname: "localhost")
        #expect(!server.log.lines.contains { $0.hasPrefix("peer") })
    }

    @Test func tls12ClientIsRefused() async throws {
        let pki = try TestPKI()
        let server = try await ProbeServer.start(try pki.serverConfiguration())
        defer { server.close() }
        let result = try PKITestTools.opensslWithoutInput([
            "s_client", "-tls1_2", "-connect", "127.0.0.1:\(server.port)", "-servername", "localhost",
            "-CAfile", pki.dir.child("ca.pem"),
        ])
        #expect(result.status != 0)
        #expect((result.stdout + result.stderr).contains("alert protocol version"))
        #expect(!result.stdout.contains("peer none"))
        print("openssl s_client -tls1_2: exit \(result.status); \(result.stderr.split(separator: "\n").first ?? "")")
    }

    @Test func theServerNegotiatesOnlyTLSAES256GCM() async throws {
        let pki = try TestPKI()
        let server = try await ProbeServer.start(try pki.serverConfiguration())
        defer { server.close() }
        let base = [
            "s_client", "-tls1_3", "-brief", "-connect", "127.0.0.1:\(server.port)", "-servername", "localhost",
            "-CAfile", pki.dir.child("ca.pem"), "-verify_return_error",
        ]
        // OpenSSL's default offer lists TLS_AES_256_GCM_SHA384 first, but also AES-128-GCM and ChaCha20.
        for offer in [nil, "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"] {
            let result = try PKITestTools.opensslWithoutInput(base + (offer.map { ["-ciphersuites", $0] } ?? []))
            let output = result.stdout + result.stderr
            #expect(result.status == 0, "\(output)")
            let cipher = output.split(separator: "\n").first { $0.hasPrefix("Ciphersuite") }.map(String.init)
            #expect(cipher == "Ciphersuite: TLS_AES_256_GCM_SHA384", "offering \(offer ?? "defaults"): \(output)")
        }
        // A client without AES-256-GCM is refused in the handshake.
        for offer in ["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"] {
            let result = try PKITestTools.opensslWithoutInput(base + ["-ciphersuites", offer])
            let output = result.stdout + result.stderr
            #expect(result.status != 0, "offering \(offer): \(output)")
            #expect(output.contains("handshake failure"), "offering \(offer): \(output)")
            #expect(!output.contains("Ciphersuite:"))
        }
        #expect(!server.log.lines.contains { $0.hasPrefix("peer") })
    }

    @Test(arguments: ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"])
    func theAgentSpeaksOnlyTLSAES256GCM(serverSuite: String) async throws {
        let pki = try TestPKI()
        // openssl s_server with the real server certificate and one TLS 1.3 suite; -rev answers each line reversed.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = [
            "s_server", "-accept", "127.0.0.1:0", "-cert", pki.dir.child("server.pem"), "-key", pki.dir.child("server.key"),
            "-tls1_3", "-ciphersuites", serverSuite, "-naccept", "1", "-rev",
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() }; process.waitUntilExit() }
        var port: Int?
        var seen = ""
        while port == nil, let chunk = try output.fileHandleForReading.read(upToCount: 1), !chunk.isEmpty {
            seen += String(decoding: chunk, as: UTF8.self)
            if seen.hasSuffix("\n"), let line = seen.split(separator: "\n").first(where: { $0.hasPrefix("ACCEPT ") }) {
                port = line.split(separator: ":").last.flatMap { Int($0) }
            }
        }
        let acceptPort = try #require(port, "s_server printed no ACCEPT line: \(seen)")
        let agent = try pki.agentConfiguration()
        if serverSuite == "TLS_AES_256_GCM_SHA384" {
            let reply = try await ProbeClient.exchange(port: acceptPort, configuration: agent, hostname: "localhost")
            #expect(reply == "olleh")
        } else {
            await ProbeClient.expectRefused(port: acceptPort, configuration: agent, hostname: "localhost")
        }
    }

    @Test func enrollmentWithTheWrongFingerprintIsRefused() async throws {
        let pki = try TestPKI()
        let server = try await ProbeServer.start(try pki.serverConfiguration())
        defer { server.close() }
        let (configuration, verifier) = try TLSSetup.enrollmentConfiguration(caFingerprint: pki.stranger.fingerprint)
        await ProbeClient.expectRefused(port: server.port, configuration: configuration, verifier: verifier)
        #expect(verifier.failure?.code == "tls.pin-mismatch")
        #expect(!server.log.lines.contains { $0.hasPrefix("peer") })
    }

    @Test func serverWithALeafNotSignedByThePinnedCAIsRefused() async throws {
        let pki = try TestPKI()
        // An impostor with its own CA, presenting its leaf followed by the real CA certificate to satisfy the pin.
        let rogue = try pki.stranger.issueServerCertificate(names: ["localhost", "127.0.0.1"])
        let server = try await ProbeServer.start(
            try pki.impostorConfiguration(leafPEM: rogue.certificatePEM, keyPEM: rogue.privateKeyPEM)
        )
        defer { server.close() }
        let (configuration, verifier) = try TLSSetup.enrollmentConfiguration(caFingerprint: pki.ca.fingerprint)
        await ProbeClient.expectRefused(port: server.port, configuration: configuration, verifier: verifier)
        #expect(verifier.failure?.code == "tls.untrusted-server")
        await ProbeClient.expectRefused(
            port: server.port,
            configuration: try pki.agentConfiguration(),
            hostname: "localhost"
        )
    }

    @Test func anAgentCertificateCannotStandInForTheServer() async throws {
        let pki = try TestPKI()
        // Signed by the real CA, but issued for clientAuth only: an enrolled agent must not impersonate the server.
        let server = try await ProbeServer.start(
            try pki.impostorConfiguration(leafPEM: pki.agent.pem, keyPEM: pki.agentKeyPEM)
        )
        defer { server.close() }
        let (configuration, verifier) = try TLSSetup.enrollmentConfiguration(caFingerprint: pki.ca.fingerprint)
        await ProbeClient.expectRefused(port: server.port, configuration: configuration, verifier: verifier)
        #expect(verifier.failure?.code == "tls.untrusted-server")
        #expect(verifier.failure.map { $0.detailedDescription().contains("not a server certificate") } == true)
        // BoringSSL's own verification (agent configuration) refuses it too, whatever the machine is called.
        await ProbeClient.expectRefused(
            port: server.port,
            configuration: try pki.agentConfiguration(),
            hostname: "web-1"
        )
    }

    @Test func configurationsReportWrongFilesBeforeAnyHandshake() throws {
        let pki = try TestPKI()
        let d = pki.dir
        func code(_ body: () throws -> TLSConfiguration) -> String? { PKITestTools.errorCode { _ = try body() } }
        #expect(
            code {
                try TLSSetup.serverConfiguration(
                    certificatePEMPath: d.child("server.pem"),
                    keyPEMPath: d.child("agent.key"),
                    caPEMPath: d.child("ca.pem")
                )
            }
                == "tls.key-mismatch"
        )
        #expect(
            code {
                try TLSSetup.agentConfiguration(
                    certificatePEMPath: d.child("agent.pem"),
                    keyPEMPath: d.child("agent.key"),
                    caPEMPath: d.child("stranger.pem")
                )
            }
                == "tls.untrusted-certificate"
        )
        #expect(
            code {
                try TLSSetup.serverConfiguration(
                    certificatePEMPath: d.child("absent.pem"),
                    keyPEMPath: d.child("server.key"),
                    caPEMPath: d.child("ca.pem")
                )
            }
                == "tls.load"
        )
        #expect(
            PKITestTools.errorCode { _ = try TLSSetup.enrollmentConfiguration(caFingerprint: "abc") }
                == "tls.bad-fingerprint"
        )
        // Upper case with colons, as `openssl x509 -fingerprint` prints it, is accepted.
        var colons = ""
        for (i, c) in pki.ca.fingerprint.uppercased().enumerated() {
            colons += (i > 0 && i % 2 == 0 ? ":" : "") + String(c)
        }
        #expect(
            try TLSSetup.enrollmentConfiguration(caFingerprint: colons).verifier.caFingerprint == pki.ca.fingerprint
        )
    }
}

// MARK: - Fixtures

/// A CA, the server's certificate, an enrolled agent "web-1", and a stranger CA, written to a temporary directory.
struct TestPKI {
    let dir: TemporaryDirectory
    let ca: CertificateAuthority
    let stranger: CertificateAuthority
    let agent: IssuedCertificate
    let agentKeyPEM: String

    init(caName: String = "Lifeboat test CA", machine: String = "web-1") throws {
        dir = try TemporaryDirectory()
        ca = try CertificateAuthority.create(commonName: caName)
        stranger = try CertificateAuthority.create(commonName: "Impostor CA")
        try ca.write(certificatePath: dir.child("ca.pem"), keyPath: dir.child("ca.key"))
        try stranger.write(certificatePath: dir.child("stranger.pem"), keyPath: dir.child("stranger.key"))
        try ca.writeServerCertificate(
            names: ["localhost", "127.0.0.1", "::1"],
            certificatePath: dir.child("server.pem"),
            keyPath: dir.child("server.key")
        )
        let key = AgentKey.generate()
        try key.write(path: dir.child("agent.key"))
        agent = try ca.signClientCertificate(
            csrDER: try key.certificateSigningRequest(machine: machine),
            machine: machine
        )
        try FileTools.write(dir.child("agent.pem"), Array(agent.pem.utf8))
        agentKeyPEM = String(decoding: try FileTools.read(dir.child("agent.key")), as: UTF8.self)
    }

    func serverConfiguration() throws -> TLSConfiguration {
        try TLSSetup.serverConfiguration(
            certificatePEMPath: dir.child("server.pem"),
            keyPEMPath: dir.child("server.key"),
            caPEMPath: dir.child("ca.pem")
        )
    }

    func agentConfiguration() throws -> TLSConfiguration {
        try TLSSetup.agentConfiguration(
            certificatePEMPath: dir.child("agent.pem"),
            keyPEMPath: dir.child("agent.key"),
            caPEMPath: dir.child("ca.pem")
        )
    }

    /// A server configuration built by hand (TLSSetup would refuse it): `leafPEM` and the real CA as its chain.
    func impostorConfiguration(leafPEM: String, keyPEM: String) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: [
                .certificate(
                    try NIOSSLCertificate(bytes: try CertificateInspection.der(fromPEM: leafPEM), format: .der)
                ),
                .certificate(try NIOSSLCertificate(bytes: ca.certificateDER, format: .der)),
            ],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem))
        )
        configuration.minimumTLSVersion = .tlsv13
        return configuration
    }
}

/// Lines the probe server recorded, one per connection: "peer serial=… cn=…", "peer none" or "error …".
final class ProbeLog: @unchecked Sendable {
    private let lock = PlainLock()
    private var stored: [String] = []

    func append(_ line: String) { lock.withLock { stored.append(line) } }
    var lines: [String] { lock.withLock { stored } }
}

/// A TLS server on 127.0.0.1 (a free port) that names the client certificate of every completed handshake.
struct ProbeServer {
    let channel: any Channel
    let port: Int
    let log: ProbeLog

    static func start(_ configuration: TLSConfiguration) async throws -> ProbeServer {
        let context = try TLSSetup.makeContext(configuration)
        let log = ProbeLog()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(PeerReporter(log: log))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return ProbeServer(channel: channel, port: try #require(channel.localAddress?.port), log: log)
    }

    func close() { channel.close(promise: nil) }
}

/// Answers the client's first bytes (application data flows only after the handshake, client certificate checks
/// included) with one line naming the peer certificate, read with `TLSSetup.peerCertificateDER`.
final class PeerReporter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let log: ProbeLog
    var answered = false

    init(log: ProbeLog) { self.log = log }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        answered = true
        let channel = context.channel
        let log = self.log
        TLSSetup.peerCertificateDER(of: channel).whenComplete { result in
            let line: String
            switch result {
            case .success(let der?):
                let serial = (try? CertificateInspection.serial(ofDER: der)) ?? "?"
                let name = ((try? CertificateInspection.commonName(ofDER: der)) ?? nil) ?? "?"
                line = "peer serial=\(serial) cn=\(name)"
            case .success(nil):
                line = "peer none"
            case .failure(let error):
                line = "error reading the peer certificate: \(error)"
            }
            log.append(line)
            channel.writeAndFlush(channel.allocator.buffer(string: line + "\n"), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        log.append("error \(error)")
        context.close(promise: nil)
    }
}

/// Connects, says hello once the TLS handshake is done and returns the server's one-line reply, or throws.
enum ProbeClient {
    struct NoReply: Error {}

    /// Records an issue unless the exchange fails; prints the client-side error for the test log.
    static func expectRefused(
        port: Int,
        configuration: TLSConfiguration,
        hostname: String? = nil,
        verifier: PinnedAuthorityVerifier? = nil,
        sourceLocation: Testing.SourceLocation = #_sourceLocation
    ) async {
        do {
            let reply = try await exchange(
                port: port,
                configuration: configuration,
                hostname: hostname,
                verifier: verifier
            )
            Issue.record(
                "expected the handshake to be refused, got the reply '\(reply)'",
                sourceLocation: sourceLocation
            )
        } catch {
            print("refused as expected (\(sourceLocation.line)): \(error)")
        }
    }

    static func exchange(
        port: Int,
        configuration: TLSConfiguration,
        hostname: String? = nil,
        verifier: PinnedAuthorityVerifier? = nil
    ) async throws -> String {
        let context = try TLSSetup.makeContext(configuration)
        let group = MultiThreadedEventLoopGroup.singleton
        let reply = group.next().makePromise(of: String.self)
        // A guard against a hang, not a timing assertion: every case here finishes in well under a second.
        let guardTask = reply.futureResult.eventLoop.scheduleTask(in: .seconds(30)) { reply.fail(NoReply()) }
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler =
                        try verifier?.makeClientHandler(context: context, serverHostname: hostname)
                        ?? NIOSSLClientHandler(context: context, serverHostname: hostname)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    try channel.pipeline.syncOperations.addHandler(LineCollector(reply: reply))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        defer {
            guardTask.cancel()
            channel.close(promise: nil)
        }
        return try await reply.futureResult.get()
    }
}

/// Completes `reply` with the first line received; fails it on an error or when the connection closes first.
final class LineCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let reply: EventLoopPromise<String>
    var received: [UInt8] = []

    init(reply: EventLoopPromise<String>) { self.reply = reply }

    func channelActive(context: ChannelHandlerContext) {
        // Buffered by the TLS handler until the handshake is done.
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: "hello\n")), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received += buffer.readBytes(length: buffer.readableBytes) ?? []
        if let end = received.firstIndex(of: UInt8(ascii: "\n")) {
            reply.succeed(String(decoding: received[..<end], as: UTF8.self))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        reply.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        reply.fail(ProbeClient.NoReply())
        context.fireChannelInactive()
    }
}
