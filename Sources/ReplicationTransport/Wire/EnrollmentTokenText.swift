import LifeboatCore

/// What `lifeboat tokens create` prints and `lifeboat agent enroll --token` takes: a one-time secret plus the
/// SHA-256 fingerprint of the server's CA, so that the agent can trust the server before it has the CA
/// (the pin) and the server can check the secret (it stores only its hash).
///
/// Text form: `lbt1-<secret: 64 hex>-<CA fingerprint: 64 hex>`.
public struct EnrollmentTokenText: Sendable, Equatable, CustomStringConvertible {
    public var secret: String
    public var caFingerprint: String

    public init(secret: String, caFingerprint: String) {
        self.secret = secret
        self.caFingerprint = caFingerprint
    }

    /// Parses the text form; `enroll.bad-token` with what is wrong.
    public init(parsing text: String) throws {
        let parts = text.trimmingWhitespace().split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "lbt1" else {
            throw LifeboatError(
                "enroll.bad-token",
                "this is not an enrollment token: expected lbt1-<secret>-<fingerprint>, as printed by `lifeboat tokens create`"
            )
        }
        for part in parts[1...] where part.count != 64 || !part.allSatisfy(\.isHexDigit) {
            throw LifeboatError("enroll.bad-token", "the enrollment token is truncated or mistyped: copy it again whole")
        }
        self.init(secret: parts[1].lowercased(), caFingerprint: parts[2].lowercased())
    }

    public var description: String { "lbt1-\(secret)-\(caFingerprint)" }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
