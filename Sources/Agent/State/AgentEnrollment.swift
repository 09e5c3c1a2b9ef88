import LifeboatCore
import LifeboatSystem
public import Logging
import NIOCore
import NIOSSL
import ReplicationProtocol
import ReplicationTransport

/// `lifeboat agent enroll`: makes a key pair here, sends a CSR with the one-time token, stores the certificate.
public enum AgentEnrollment {
    /// Enrolls this machine with the server. The private key is generated in the state directory and never
    /// leaves it. Refuses a state directory that is enrolled already (`agent.enrolled`).
    public static func enroll(
        server: String,
        token text: String,
        machine: String,
        state: AgentStateDirectory,
        logger: Logger
    ) async throws -> AgentIdentity {
        try Names.validate(machine, kind: "machine")
        let token = try EnrollmentTokenText(parsing: text)
        let address = try ServerAddress(parsing: server)
        if state.isEnrolled {
            throw LifeboatError(
                "agent.enrolled",
                "\(state.root) is enrolled already; to enroll again, remove the machine on the server and delete \(state.identity)"
            )
        }
        try SystemCalls.makeDirectory(state.root, mode: 0o700)
        let key = AgentKey.generate()
        let csr = try key.certificateSigningRequest(machine: machine)
        let (configuration, verifier) = try TLSSetup.enrollmentConfiguration(caFingerprint: token.caFingerprint, logger: logger)
        let context: NIOSSLContext
        do {
            context = try TLSSetup.makeContext(configuration)
        } catch {
            throw LifeboatError("tls.setup", "cannot set up TLS for enrollment", cause: error)
        }
        let connection = try await ServerConnection.open(address, context: context, verifier: verifier)
        let answer: Message?
        do {
            answer = try await connection.executeThenClose { inbound, outbound in
                try await outbound.write(Message.enroll(token: token.description, machine: machine, csr: csr))
                var frames = inbound.makeAsyncIterator()
                return try await frames.next()
            }
        } catch {
            // A refused handshake surfaces here: say why in the verifier's words.
            if let failure = verifier.failure { throw failure }
            throw LifeboatError("enroll.failed", "the enrollment connection to \(address) failed", cause: error)
        }
        switch answer {
        case .enrolled(let certificate, let ca):
            guard CertificateInspection.fingerprint(ofDER: ca) == token.caFingerprint else {
                throw LifeboatError("enroll.untrusted", "the server answered with a CA that does not match the token's fingerprint")
            }
            let serial = try CertificateInspection.serial(ofDER: certificate)
            try key.write(path: state.key)
            try SystemCalls.writeFileAtomically(state.certificate, Array(CertificateInspection.pem(fromDER: certificate).utf8), mode: 0o644)
            try SystemCalls.writeFileAtomically(state.ca, Array(CertificateInspection.pem(fromDER: ca).utf8), mode: 0o644)
            let identity = AgentIdentity(server: address.description, machine: machine, enrolledAt: Timestamp.now(), certificateSerial: serial)
            try identity.write(state)
            logger.notice("enrolled", metadata: ["machine": "\(machine)", "server": "\(address)", "serial": "\(serial)"])
            return identity
        case .error(let code, let message):
            throw LifeboatError(LifeboatError.Code(code), "the server refused the enrollment: \(message)")
        case nil:
            throw LifeboatError("enroll.no-answer", "the server closed the connection without answering the enrollment")
        case .some(let other):
            throw LifeboatError("protocol.violation", "the server answered the enrollment with \(other.type)")
        }
    }
}
