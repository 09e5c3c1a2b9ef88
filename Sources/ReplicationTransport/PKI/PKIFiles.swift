import LifeboatCore
import LifeboatSystem

/// Reads and writes the PEM files of the PKI: private keys 0600, certificates 0644, always atomically.
enum PKIFiles {
    static let privateKeyMode: UInt32 = 0o600
    static let certificateMode: UInt32 = 0o644

    /// The text of a PEM file; failures are `code` errors that name the file and say what it should hold.
    static func read(_ path: String, what: String, code: LifeboatError.Code = "pki.load") throws -> String {
        do {
            return String(decoding: try SystemCalls.readFile(path), as: UTF8.self)
        } catch {
            throw LifeboatError(code, "cannot read \(what) from \(path)", cause: error)
        }
    }

    static func writePrivateKey(_ pem: String, to path: String) throws {
        try SystemCalls.writeFileAtomically(path, Array(terminated(pem).utf8), mode: .init(privateKeyMode))
    }

    static func writeCertificate(_ pem: String, to path: String) throws {
        try SystemCalls.writeFileAtomically(path, Array(terminated(pem).utf8), mode: .init(certificateMode))
    }

    static func terminated(_ text: String) -> String {
        text.hasSuffix("\n") ? text : text + "\n"
    }
}
