/// An error a person can act on: a stable code, a message that says what to do, the cause, and where it came from.
///
/// Every module reports failures as `LifeboatError`. The command line prints `description` (one line);
/// logs and `--verbose` print `detailedDescription()` with the cause chain.
public struct LifeboatError: Error, CustomStringConvertible, Sendable {
    /// A stable, machine-readable error code (`store.wrong-key`, `store.corrupt`, …).
    public struct Code: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public init(stringLiteral value: String) { self.rawValue = value }
        public var description: String { rawValue }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?
    public var location: SourceLocation

    public init(
        _ code: Code,
        _ message: String,
        cause: (any Error)? = nil,
        location: SourceLocation = .here()
    ) {
        self.code = code
        self.message = message
        self.cause = cause
        self.location = location
    }

    /// One line, for a person at a terminal.
    public var description: String {
        if let cause {
            let causeText = (cause as? LifeboatError)?.description ?? String(describing: cause)
            return "\(message) (\(causeText))"
        }
        return message
    }

    /// The whole chain of causes with codes and source locations, for logs.
    public func detailedDescription() -> String {
        var lines = ["[\(code)] \(message) at \(location)"]
        var next = cause
        var depth = 1
        while let current = next {
            let indent = String(repeating: "  ", count: depth)
            if let inner = current as? LifeboatError {
                lines.append("\(indent)caused by [\(inner.code)] \(inner.message) at \(inner.location)")
                next = inner.cause
            } else {
                lines.append("\(indent)caused by \(current)")
                next = nil
            }
            depth += 1
        }
        return lines.joined(separator: "\n")
    }
}

/// Where in the source an error was made.
public struct SourceLocation: Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public static func here(file: String = #fileID, line: Int = #line) -> SourceLocation {
        SourceLocation(file: file, line: line)
    }

    public var description: String { "\(file):\(line)" }
}

extension LifeboatError.Code {
    /// Matches errors by code in `catch` patterns.
    public static func ~= (code: LifeboatError.Code, error: any Error) -> Bool {
        (error as? LifeboatError)?.code == code
    }
}
