import LifeboatCore
import LifeboatTesting
import ReplicationTransport
import Testing

/// Runs the system's openssl, the independent second opinion on what the PKI code writes.
enum PKITestTools {
    static func openssl(_ arguments: [String]) throws -> ProcessResult {
        try Processes.run("/usr/bin/openssl", arguments)
    }

    /// openssl with stdin from /dev/null (s_client would otherwise wait for input).
    static func opensslWithoutInput(_ arguments: [String]) throws -> ProcessResult {
        try Processes.run("/bin/sh", ["-c", "exec /usr/bin/openssl \"$@\" < /dev/null", "openssl"] + arguments)
    }

    static func errorCode(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch let error as LifeboatError {
            return error.code.rawValue
        } catch {
            return "not a LifeboatError: \(error)"
        }
    }
}

@Suite("PKI: certificate authority, CSRs, certificates")
struct PKITests {
    @Test func authorityRoundTripsThroughFilesWithPrivateKeyMode0600() async throws {
        let dir = try TemporaryDirectory()
        let ca = try CertificateAuthority.create(commonName: "Lifeboat test CA")
        try ca.write(certificatePath: dir.child("ca.pem"), keyPath: dir.child("ca.key"))
        #expect(try FileTools.mode(dir.child("ca.key")) == 0o600)
        #expect(try FileTools.mode(dir.child("ca.pem")) == 0o644)

        let loaded = try CertificateAuthority.load(certificatePath: dir.child("ca.pem"), keyPath: dir.child("ca.key"))
        #expect(loaded.certificateDER == ca.certificateDER)
        #expect(loaded.certificatePEM == ca.certificatePEM)
        #expect(loaded.fingerprint == ca.fingerprint)
        #expect(loaded.commonName == "Lifeboat test CA")
        #expect(ca.fingerprint.count == 64)
        #expect(ca.fingerprint.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(try CertificateInspection.der(fromPEM: ca.certificatePEM) == ca.certificateDER)

        // The loaded key still signs certificates that chain to the original CA certificate.
        let issued = try loaded.signClientCertificate(
            csrDER: try AgentKey.generate().certificateSigningRequest(machine: "web-1"),
            machine: "web-1"
        )
        try await CertificateInspection.verify(leafDER: issued.der, caDER: ca.certificateDER, purpose: .client)

        // openssl agrees on the fingerprint and sees a CA that may sign certificates and CRLs.
        let fingerprint = try PKITestTools.openssl([
            "x509", "-noout", "-fingerprint", "-sha256", "-in", dir.child("ca.pem"),
        ])
        #expect(fingerprint.status == 0)
        let hex = fingerprint.stdout.split(separator: "=").last.map { $0.filter { $0 != ":" && $0 != "\n" } } ?? ""
        #expect(hex.lowercased() == ca.fingerprint)
        let text = try PKITestTools.openssl(["x509", "-noout", "-text", "-in", dir.child("ca.pem")]).stdout
        #expect(text.contains("CA:TRUE, pathlen:0"))
        #expect(text.contains("Certificate Sign, CRL Sign"))
        #expect(text.contains("ecdsa-with-SHA384"))
        #expect(text.contains("Subject: CN = Lifeboat test CA"))
    }

    @Test func loadingReportsTheFileThatIsWrong() throws {
        let dir = try TemporaryDirectory()
        let ca = try CertificateAuthority.create(commonName: "CA one")
        let other = try CertificateAuthority.create(commonName: "CA two")
        try ca.write(certificatePath: dir.child("ca.pem"), keyPath: dir.child("ca.key"))
        try other.write(certificatePath: dir.child("other.pem"), keyPath: dir.child("other.key"))
        try FileTools.write(dir.child("junk.pem"), Array("not a certificate\n".utf8))

        func loadError(_ certificate: String, _ key: String) -> LifeboatError? {
            do {
                _ = try CertificateAuthority.load(certificatePath: dir.child(certificate), keyPath: dir.child(key))
                return nil
            } catch {
                return error as? LifeboatError
            }
        }
        let missing = loadError("absent.pem", "ca.key")
        #expect(missing?.code == "pki.load")
        #expect(missing?.description.contains(dir.child("absent.pem")) == true)
        let junk = loadError("junk.pem", "ca.key")
        #expect(junk?.code == "pki.load")
        #expect(junk?.description.contains(dir.child("junk.pem")) == true)
        let mismatched = loadError("ca.pem", "other.key")
        #expect(mismatched?.code == "pki.load")
        #expect(mismatched?.message.contains("does not belong") == true)
        #expect(mismatched?.message.contains(dir.child("other.key")) == true)
        #expect(PKITestTools.errorCode { _ = try AgentKey.load(path: dir.child("junk.pem")) } == "pki.load")
    }

    @Test func serverCertificateHasASubjectAlternativeNameForEveryName() async throws {
        let dir = try TemporaryDirectory()
        let ca = try CertificateAuthority.create(commonName: "Lifeboat test CA")
        try ca.write(certificatePath: dir.child("ca.pem"), keyPath: dir.child("ca.key"))
        let names = ["localhost", "127.0.0.1", "::1", "backup-1.example.com", "10.1.2.3"]
        try ca.writeServerCertificate(
            names: names,
            certificatePath: dir.child("server.pem"),
            keyPath: dir.child("server.key")
        )
        #expect(try FileTools.mode(dir.child("server.key")) == 0o600)
        #expect(try FileTools.mode(dir.child("server.pem")) == 0o644)

        let der = try CertificateInspection.der(
            fromPEM: String(decoding: try FileTools.read(dir.child("server.pem")), as: UTF8.self)
        )
        #expect(try CertificateInspection.subjectAlternativeNames(ofDER: der) == names)
        #expect(try CertificateInspection.commonName(ofDER: der) == "localhost")
        try await CertificateInspection.verify(leafDER: der, caDER: ca.certificateDER, purpose: .server)
        await #expect(throws: LifeboatError.self) {
            try await CertificateInspection.verify(leafDER: der, caDER: ca.certificateDER, purpose: .client)
        }

        let text = try PKITestTools.openssl(["x509", "-noout", "-text", "-in", dir.child("server.pem")]).stdout
        for expected in [
            "DNS:localhost", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1", "DNS:backup-1.example.com",
            "IP Address:10.1.2.3", "TLS Web Server Authentication", "CA:FALSE", "Digital Signature",
        ] {
            #expect(text.contains(expected), "openssl does not show \(expected)")
        }
        let verify = try PKITestTools.openssl([
            "verify", "-CAfile", dir.child("ca.pem"), "-purpose", "sslserver", dir.child("server.pem"),
        ])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")

        #expect(PKITestTools.errorCode { _ = try ca.issueServerCertificate(names: []) } == "pki.bad-name")
        #expect(PKITestTools.errorCode { _ = try ca.issueServerCertificate(names: ["bad name"]) } == "pki.bad-name")
    }

    @Test func signsACSRAsTheMachineWithClientAuthAndARandomSerial() async throws {
        let dir = try TemporaryDirectory()
        let ca = try CertificateAuthority.create(commonName: "Lifeboat test CA")
        try ca.write(certificatePath: dir.child("ca.pem"), keyPath: dir.child("ca.key"))
        let key = AgentKey.generate()
        // The agent asks for another name: the CA ignores the requested subject and uses the machine it enrolled.
        let csr = try key.certificateSigningRequest(machine: "asked-for")
        let clock = ManualWallClock(Timestamp.now())
        let issued = try ca.signClientCertificate(csrDER: csr, machine: "db-7", clock: clock)

        #expect(issued.commonName == "db-7")
        #expect(try CertificateInspection.commonName(ofDER: issued.der) == "db-7")
        #expect(try CertificateInspection.serial(ofDER: issued.der) == issued.serial)
        #expect(issued.serial.count <= 32 && issued.serial.count >= 20)
        #expect(issued.serial.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(issued.notAfter == Timestamp(seconds: clock.now().seconds + 731 * 86400))
        #expect(try CertificateInspection.notAfter(ofDER: issued.der) == issued.notAfter)
        #expect(try CertificateInspection.der(fromPEM: issued.pem) == issued.der)
        #expect(key.matches(certificateDER: issued.der))
        #expect(!AgentKey.generate().matches(certificateDER: issued.der))

        let again = try ca.signClientCertificate(csrDER: csr, machine: "db-7")
        #expect(again.serial != issued.serial)

        // swift-certificates' Verifier: chains to the CA, is a client certificate, and nothing else.
        try await CertificateInspection.verify(leafDER: issued.der, caDER: ca.certificateDER, purpose: .client)
        await #expect(throws: LifeboatError.self) {
            try await CertificateInspection.verify(leafDER: issued.der, caDER: ca.certificateDER, purpose: .server)
        }
        let stranger = try CertificateAuthority.create(commonName: "Lifeboat test CA")
        await #expect(throws: LifeboatError.self) {
            try await CertificateInspection.verify(
                leafDER: issued.der,
                caDER: stranger.certificateDER,
                purpose: .client
            )
        }

        // openssl: same serial, clientAuth, chains to the CA for the sslclient purpose and not for sslserver.
        try FileTools.write(dir.child("agent.pem"), Array(issued.pem.utf8))
        let serial = try PKITestTools.openssl(["x509", "-noout", "-serial", "-in", dir.child("agent.pem")]).stdout
        #expect(serial.lowercased().trimmingSuffixNewline == "serial=" + issued.serial)
        let text = try PKITestTools.openssl(["x509", "-noout", "-text", "-in", dir.child("agent.pem")]).stdout
        #expect(text.contains("Subject: CN = db-7"))
        #expect(text.contains("TLS Web Client Authentication"))
        #expect(!text.contains("TLS Web Server Authentication"))
        let asClient = try PKITestTools.openssl([
            "verify", "-CAfile", dir.child("ca.pem"), "-purpose", "sslclient", dir.child("agent.pem"),
        ])
        #expect(asClient.status == 0, "\(asClient.stdout)\(asClient.stderr)")
        #expect(asClient.stdout.contains("OK"))
        let asServer = try PKITestTools.openssl([
            "verify", "-CAfile", dir.child("ca.pem"), "-purpose", "sslserver", dir.child("agent.pem"),
        ])
        #expect(asServer.status != 0)
    }

    @Test func opensslAcceptsTheAgentsCSR() throws {
        let dir = try TemporaryDirectory()
        try FileTools.write(dir.child("csr.der"), try AgentKey.generate().certificateSigningRequest(machine: "web-1"))
        let result = try PKITestTools.openssl([
            "req", "-inform", "DER", "-in", dir.child("csr.der"), "-noout", "-verify", "-subject",
        ])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect((result.stdout + result.stderr).contains("verify OK"))
        #expect(result.stdout.contains("CN = web-1"))
    }

    @Test func tamperedOrMalformedCSRIsRefused() throws {
        let ca = try CertificateAuthority.create(commonName: "Lifeboat test CA")
        let csr = try AgentKey.generate().certificateSigningRequest(machine: "web-1")
        // Change the requested name inside the signed part: still valid DER, but the signature no longer matches.
        let name = Array("web-1".utf8)
        let at = try #require(csr.indices.first { csr[$0..<min($0 + name.count, csr.count)].elementsEqual(name) })
        var tampered = csr
        tampered[at] = UInt8(ascii: "x")
        #expect(
            PKITestTools.errorCode { _ = try ca.signClientCertificate(csrDER: tampered, machine: "web-1") }
                == "pki.bad-csr"
        )
        #expect(
            PKITestTools.errorCode {
                _ = try ca.signClientCertificate(csrDER: [0x30, 0x03, 1, 2, 3], machine: "web-1")
            } == "pki.bad-csr"
        )
        #expect(
            PKITestTools.errorCode { _ = try ca.signClientCertificate(csrDER: csr, machine: "bad name") }
                == "name.invalid"
        )
        #expect(PKITestTools.errorCode { _ = try ca.signClientCertificate(csrDER: csr, machine: "web-1") } == nil)
    }

    @Test func agentKeyRoundTripsWithMode0600() throws {
        let dir = try TemporaryDirectory()
        let ca = try CertificateAuthority.create(commonName: "Lifeboat test CA")
        let key = AgentKey.generate()
        try key.write(path: dir.child("agent.key"))
        #expect(try FileTools.mode(dir.child("agent.key")) == 0o600)
        let loaded = try AgentKey.load(path: dir.child("agent.key"))
        let issued = try ca.signClientCertificate(
            csrDER: try loaded.certificateSigningRequest(machine: "web-1"),
            machine: "web-1"
        )
        #expect(key.matches(certificateDER: issued.der))
        let check = try PKITestTools.openssl(["pkey", "-in", dir.child("agent.key"), "-noout", "-check"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    }
}

extension String {
    fileprivate var trimmingSuffixNewline: String {
        var text = self
        while text.hasSuffix("\n") { text.removeLast() }
        return text
    }
}
