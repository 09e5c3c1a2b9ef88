import Foundation

/// Sizes used throughout the tests.
public let KiB = 1 << 10
public let MiB = 1 << 20

/// What a finished child process left behind.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// Runs real programs (the lifeboat binary, losetup, mount, qemu-img) for end-to-end tests.
public enum Processes {
    /// Runs `executable` to its end (inheriting the environment) and captures its output.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws
        -> ProcessResult
    {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Both pipes at once: a child that fills one while we wait on the other would block forever.
        let errors = ErrorsBox()
        let reader = Thread { errors.data = err.fileHandleForReading.readDataToEndOfFile(); errors.done.signal() }
        reader.start()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        errors.done.wait()
        let e = errors.data
        p.waitUntilExit()
        return ProcessResult(
            status: p.terminationStatus,
            stdout: String(decoding: o, as: UTF8.self),
            stderr: String(decoding: e, as: UTF8.self)
        )
    }
}

/// Standard error read by a second thread.
private final class ErrorsBox: @unchecked Sendable {
    var data = Data()
    let done = DispatchSemaphore(value: 0)
}
