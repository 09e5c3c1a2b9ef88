import LifeboatCore
import LifeboatTesting
import NIOSSL
import Recovery
import Testing

@Suite("NBD over TLS (STARTTLS)")
struct TLSTests {
    /// A CA and a server certificate for 127.0.0.1, made with openssl in `dir` (`ca-cert.pem` is what clients
    /// are given); returns the server's TLS context.
    static func makePKI(in dir: String) throws -> NIOSSLContext {
        let ext = dir + "/server.ext"
        try FileTools.write(
            ext,
            Array(
                """
                basicConstraints=CA:FALSE
                keyUsage=digitalSignature,keyEncipherment
                extendedKeyUsage=serverAuth
                subjectAltName=IP:127.0.0.1,DNS:localhost

                """.utf8
            )
        )
        let openssl = "/usr/bin/openssl"
        try run(openssl, [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", dir + "/ca-key.pem", "-out", dir + "/ca-cert.pem", "-days", "2", "-subj", "/CN=lifeboat test CA",
        ])
        try run(openssl, [
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", dir + "/server-key.pem", "-out", dir + "/server.csr", "-subj", "/CN=127.0.0.1",
        ])
        try run(openssl, [
            "x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca-cert.pem", "-CAkey", dir + "/ca-key.pem",
            "-CAcreateserial", "-out", dir + "/server-cert.pem", "-days", "2", "-extfile", ext,
        ])
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(dir + "/server-cert.pem").map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: dir + "/server-key.pem", format: .pem))
        )
        configuration.minimumTLSVersion = .tlsv13
        return try NIOSSLContext(configuration: configuration)
    }

    @Test("qemu-img and nbdinfo over STARTTLS read the point byte-identically; plain clients are refused")
    func startTLS() async throws {
        let pki = try TemporaryDirectory(prefix: "lifeboat-nbd-pki")
        let clientDir = pki.child("client")
        try FileTools.makeDirectory(clientDir)
        let context = try Self.makePKI(in: pki.path)
        try FileTools.write(clientDir + "/ca-cert.pem", try FileTools.read(pki.child("ca-cert.pem")))

        let f = try NBDFixture(tls: context)
        try f.server.register(try f.pointExport(name: "point"))
        try await f.server.start()
        let port = f.port

        let object = "tls-creds-x509,id=tls0,dir=\(clientDir),endpoint=client"
        let image = "driver=nbd,host=127.0.0.1,port=\(port),export=point,tls-creds=tls0"
        let info = try run("/usr/bin/qemu-img", ["info", "--object", object, "--image-opts", image])
        #expect(info.stdout.contains("\(NBDFixture.imageSize) bytes"))
        let out = f.path("tls.raw")
        try run("/usr/bin/qemu-img", ["convert", "--object", object, "--image-opts", image, "-O", "raw", out])
        expectSameBytes(try FileTools.read(out), try FileTools.read(try f.exportedImage()), "qemu-img convert over TLS")

        let tlsURI = "nbds://127.0.0.1:\(port)/point?tls-certificates=\(clientDir)"
        let size = try run("/usr/bin/nbdinfo", ["--size", tlsURI])
        #expect(size.stdout.contains("\(NBDFixture.imageSize)"))
        let list = try run("/usr/bin/nbdinfo", ["--list", "nbds://127.0.0.1:\(port)?tls-certificates=\(clientDir)"])
        #expect(list.stdout.contains("export=\"point\""))
        let copy = f.path("tls-nbdcopy.raw")
        try run("/usr/bin/nbdcopy", ["--requests=16", tlsURI, copy])
        expectSameBytes(try FileTools.read(copy), f.image, "nbdcopy over TLS")

        let plain = try run("/usr/bin/nbdinfo", ["--size", f.uri("point")], expectSuccess: false)
        #expect(plain.status != 0, "a plain client must not reach an export of a TLS server")
        let plainQemu = try run("/usr/bin/qemu-img", ["info", f.uri("point")], expectSuccess: false)
        #expect(plainQemu.status != 0)
        #expect(plainQemu.stderr.contains("TLS"), "\(plainQemu.stderr)")

        // A client with the wrong CA fails the handshake.
        let otherDir = try TemporaryDirectory(prefix: "lifeboat-nbd-other")
        _ = try Self.makePKI(in: otherDir.path)
        let wrong = try run("/usr/bin/nbdinfo", ["--size", "nbds://127.0.0.1:\(port)/point?tls-certificates=\(otherDir.path)"], expectSuccess: false)
        #expect(wrong.status != 0)
        try await f.close()
    }

    @Test("with TLS a non-loopback address is allowed")
    func nonLoopbackWithTLS() async throws {
        let pki = try TemporaryDirectory(prefix: "lifeboat-nbd-pki")
        let context = try Self.makePKI(in: pki.path)
        let server = try NBDServer(configuration: .init(host: "0.0.0.0", tls: context), logger: NBDFixture.logger)
        try await server.start()
        #expect(server.port != nil)
        #expect(server.uri(for: "x")?.hasPrefix("nbds://") == true)
        try await server.close()
    }
}
