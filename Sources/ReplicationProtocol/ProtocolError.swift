public import LifeboatCore

extension LifeboatError {
    /// A peer broke the protocol: the connection is closed with this error; nothing else is affected.
    static func protocolViolation(_ what: String, location: SourceLocation = .here()) -> LifeboatError {
        LifeboatError("protocol.violation", what, location: location)
    }

    static func malformed(_ what: String, location: SourceLocation = .here()) -> LifeboatError {
        LifeboatError("protocol.malformed", what, location: location)
    }
}

/// Why a session closed, for the log: a stable code and a message.
public struct CloseReason: Sendable, Equatable, CustomStringConvertible {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    public init(_ error: LifeboatError) {
        self.init(code: error.code.rawValue, message: error.message)
    }

    public var description: String { "[\(code)] \(message)" }
}
