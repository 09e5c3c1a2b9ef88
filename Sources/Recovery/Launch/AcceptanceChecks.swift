#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import Foundation
public import LifeboatCore
import NIOPosix

/// Where a running recovery instance is checked.
public struct CheckTarget: Sendable {
    public var instance: String
    /// Where its ports are reached (nil: ports cannot be checked).
    public var host: String?
    /// Guest port → host port.
    public var ports: [Int: Int]
    public var consoleLog: String?

    public init(instance: String, host: String?, ports: [Int: Int], consoleLog: String?) {
        self.instance = instance
        self.host = host
        self.ports = ports
        self.consoleLog = consoleLog
    }

    init(instance: String, runtime: InstanceRuntime) {
        self.init(instance: instance, host: runtime.host, ports: runtime.ports, consoleLog: runtime.consoleLog)
    }
}

/// One attempt's result.
public struct CheckAttempt: Sendable, Equatable {
    public var passed: Bool
    /// What was seen: the matching line, the HTTP status, the command's output, or why it failed.
    public var detail: String
}

/// Runs acceptance checks against a recovery instance until each passes or the deadline comes.
///
/// Checks run in the order configured; each is retried every second (a machine takes a while to boot) and the
/// next starts once it passed. The serial check reads the console incrementally, so a long console costs nothing.
public struct AcceptanceRunner: Sendable {
    public var checks: [AcceptanceCheck]
    public var target: CheckTarget
    public var retryInterval: Duration = .seconds(1)

    public init(checks: [AcceptanceCheck], target: CheckTarget) {
        self.checks = checks
        self.target = target
    }

    /// The outcome of all checks: nil when all passed, else the failing check and its last attempt.
    /// `onPassed` is told of each check that passed. `isAlive` stops early when the machine is gone.
    public func run(
        until deadline: ContinuousClock.Instant,
        isAlive: @escaping @Sendable () -> Bool?,
        onPassed: @Sendable (AcceptanceCheck, CheckAttempt) -> Void
    ) async -> (check: AcceptanceCheck, attempt: CheckAttempt)? {
        let console = ConsoleReader(path: target.consoleLog)
        for check in checks {
            var last = CheckAttempt(passed: false, detail: "not attempted before the deadline")
            while true {
                if Task.isCancelled {
                    return (check, CheckAttempt(passed: false, detail: "cancelled: the server is shutting down"))
                }
                last = await attempt(check, console: console)
                if last.passed {
                    onPassed(check, last)
                    break
                }
                if isAlive() == false {
                    return (check, CheckAttempt(passed: false, detail: "the machine stopped: \(last.detail)"))
                }
                if ContinuousClock.now >= deadline { return (check, last) }
                try? await Task.sleep(for: retryInterval)
            }
        }
        return nil
    }

    /// One attempt of one check.
    func attempt(_ check: AcceptanceCheck, console: ConsoleReader) async -> CheckAttempt {
        switch check {
        case .serial(let pattern):
            return console.firstMatch(pattern)
        case .tcp(let port):
            guard let host = target.host else { return CheckAttempt(passed: false, detail: "the instance has no reachable address") }
            let hostPort = target.ports[port] ?? port
            return await blocking { Self.tcpConnect(host: host, port: hostPort) }
        case .http(let port, let path, let status, let pattern):
            guard let host = target.host else { return CheckAttempt(passed: false, detail: "the instance has no reachable address") }
            let hostPort = target.ports[port] ?? port
            return await blocking { Self.httpGet(host: host, port: hostPort, path: path, status: status, pattern: pattern) }
        case .command(let command):
            let environment = commandEnvironment()
            return await blocking { Self.runCommand(command, environment: environment) }
        }
    }

    func commandEnvironment() -> [String: String] {
        var environment = DetachedProcess.currentEnvironment()
        environment["LIFEBOAT_INSTANCE"] = target.instance
        environment["LIFEBOAT_HOST"] = target.host ?? ""
        environment["LIFEBOAT_CONSOLE"] = target.consoleLog ?? ""
        for (guest, host) in target.ports { environment["LIFEBOAT_PORT_\(guest)"] = "\(host)" }
        return environment
    }

    private func blocking(_ body: @escaping @Sendable () -> CheckAttempt) async -> CheckAttempt {
        (try? await LaunchThreads.pool.runIfActive(body))
            ?? CheckAttempt(passed: false, detail: "the check could not run: the thread pool is shutting down")
    }

    // MARK: - Network

    /// A connected TCP socket to host:port within `timeout`, or why not.
    static func connect(host: String, port: Int, timeout: Int32 = 3000) -> Result<Int32, CheckFailure> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, "\(port)", &hints, &list) == 0, let first = list else {
            return .failure(CheckFailure("cannot resolve \(host)"))
        }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return .failure(CheckFailure("socket: \(String(cString: strerror(errno)))")) }
        if Glibc.connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 && errno != EINPROGRESS {
            let text = String(cString: strerror(errno))
            close(fd)
            return .failure(CheckFailure("connect to \(host):\(port): \(text)"))
        }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&p, 1, timeout) == 1 else {
            close(fd)
            return .failure(CheckFailure("connect to \(host):\(port): timed out"))
        }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        guard error == 0 else {
            close(fd)
            return .failure(CheckFailure("connect to \(host):\(port): \(String(cString: strerror(error)))"))
        }
        // Blocking from here on, with timeouts.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return .success(fd)
    }

    struct CheckFailure: Error {
        var text: String
        init(_ text: String) { self.text = text }
    }

    static func tcpConnect(host: String, port: Int) -> CheckAttempt {
        switch connect(host: host, port: port) {
        case .success(let fd):
            // User networking accepts on the host side before the guest answers: wait briefly for the guest to
            // refuse (the forward then closes the connection) before calling the port open.
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 300)
            var byte: UInt8 = 0
            let closedByPeer = ready == 1 && recv(fd, &byte, 1, Int32(MSG_PEEK)) == 0
            close(fd)
            if closedByPeer { return CheckAttempt(passed: false, detail: "\(host):\(port) closed the connection at once (nothing listens behind the forward)") }
            return CheckAttempt(passed: true, detail: "\(host):\(port) accepts connections")
        case .failure(let failure):
            return CheckAttempt(passed: false, detail: failure.text)
        }
    }

    static func httpGet(host: String, port: Int, path: String, status: Int, pattern: String?) -> CheckAttempt {
        let fd: Int32
        switch connect(host: host, port: port) {
        case .success(let s): fd = s
        case .failure(let failure): return CheckAttempt(passed: false, detail: failure.text)
        }
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: \(host)\r\nUser-Agent: lifeboat-acceptance\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            return CheckAttempt(passed: false, detail: "GET \(path): send failed: \(String(cString: strerror(errno)))")
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while response.count < 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 { return CheckAttempt(passed: false, detail: "GET \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            response.append(contentsOf: chunk[0..<n])
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else {
            return CheckAttempt(passed: false, detail: "GET \(path): no complete HTTP answer (\(response.count) bytes)")
        }
        let statusLine = text[..<split.lowerBound].split(separator: "\r\n").first.map(String.init) ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let got = Int(parts[1]) else {
            return CheckAttempt(passed: false, detail: "GET \(path): not an HTTP status line: \(statusLine.prefix(80))")
        }
        let body = String(text[split.upperBound...])
        guard got == status else {
            return CheckAttempt(passed: false, detail: "GET \(path): status \(got), expected \(status)")
        }
        if let pattern {
            guard let regex = try? Regex(pattern), body.contains(regex) else {
                return CheckAttempt(passed: false, detail: "GET \(path): status \(got) but the body does not match /\(pattern)/: \(body.prefix(120).debugDescription)")
            }
        }
        return CheckAttempt(passed: true, detail: "GET http://\(host):\(port)\(path) → \(got)" + (pattern.map { ", body matches /\($0)/" } ?? ""))
    }

    // MARK: - Command

    static let commandTimeout: TimeInterval = 60

    static func runCommand(_ command: String, environment: [String: String]) -> CheckAttempt {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return CheckAttempt(passed: false, detail: "cannot run /bin/sh: \(error)")
        }
        let output = LockedValue<[UInt8]>([])
        let reader = Thread {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            output.value = Array(data.prefix(64 * 1024))
        }
        reader.start()
        let deadline = Date().addingTimeInterval(commandTimeout)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning {
            process.terminate()
            usleep(500_000)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        for _ in 0..<100 where output.value.isEmpty && process.terminationReason == .exit { usleep(10_000) }
        let text = String(decoding: output.value, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let shown = text.count > 400 ? "…" + text.suffix(400) : text
        if process.terminationReason == .uncaughtSignal {
            return CheckAttempt(passed: false, detail: "command killed by signal \(process.terminationStatus) (timeout \(Int(commandTimeout)) s): \(shown)")
        }
        let status = process.terminationStatus
        return CheckAttempt(passed: status == 0, detail: "command exited \(status)" + (shown.isEmpty ? "" : ": \(shown)"))
    }
}

/// Reads a console log incrementally, keeping the lines seen so far.
final class ConsoleReader: @unchecked Sendable {
    let path: String?
    private let lock = PlainLock()
    private var offset: off_t = 0
    private var partial: [UInt8] = []
    private var lines: [String] = []

    init(path: String?) { self.path = path }

    func firstMatch(_ pattern: String) -> CheckAttempt {
        guard let path else { return CheckAttempt(passed: false, detail: "the launcher captures no serial console") }
        guard let regex = try? Regex(pattern) else { return CheckAttempt(passed: false, detail: "/\(pattern)/ is not a valid pattern") }
        return lock.withLock {
            readNew(path)
            // An unterminated last line (a prompt) counts too.
            let pending = Self.clean(partial)
            if let line = lines.first(where: { $0.contains(regex) }) ?? (pending.contains(regex) ? pending : nil) {
                return CheckAttempt(passed: true, detail: "console: \(line.prefix(200))")
            }
            return CheckAttempt(passed: false, detail: "no console line matches /\(pattern)/ (\(lines.count) lines so far)")
        }
    }

    /// A console line as text: ANSI escape sequences (`ESC [ … final byte`, `ESC ] … BEL`) and other control
    /// bytes (carriage returns) removed, so that patterns anchored with `^` match coloured lines too.
    static func clean(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x1B, i + 1 < bytes.count {
                let kind = bytes[i + 1]
                i += 2
                if kind == UInt8(ascii: "[") {
                    // CSI: parameter and intermediate bytes up to a final byte 0x40-0x7E.
                    while i < bytes.count && !(0x40...0x7E).contains(bytes[i]) { i += 1 }
                    i += 1
                } else if kind == UInt8(ascii: "]") {
                    // OSC: up to BEL or ESC \.
                    while i < bytes.count && bytes[i] != 0x07 && bytes[i] != 0x1B { i += 1 }
                    i += (i < bytes.count && bytes[i] == 0x1B) ? 2 : 1
                }
                continue
            }
            if b >= 0x20 || b == 0x09 { out.append(b) }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private func readNew(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            guard n > 0 else { break }
            offset += off_t(n)
            for byte in chunk[0..<n] {
                if byte == UInt8(ascii: "\n") {
                    lines.append(Self.clean(partial))
                    partial.removeAll(keepingCapacity: true)
                } else {
                    partial.append(byte)
                }
            }
        }
    }
}
