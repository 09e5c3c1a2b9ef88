#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import LifeboatCore
import LifeboatTesting
import Synchronization
import Testing

@testable import Recovery

/// A TCP server on 127.0.0.1 for one test: holds connections open, closes them at once, or answers every
/// request with fixed bytes. `close()` stops its thread and closes every socket.
private final class LoopbackServer: @unchecked Sendable {
    enum Behavior {
        case hold
        case closeAtOnce
        case respond(String)
    }

    let port: Int
    private let fd: Int32
    private let stopped = Mutex(false)
    private let held = Mutex<[Int32]>([])
    private let received = Mutex<[String]>([])
    private let finished = DispatchSemaphore(value: 0)

    init(_ behavior: Behavior) throws {
        fd = try Sockets.bound()
        port = try Sockets.port(of: fd)
        guard listen(fd, 16) == 0 else {
            Glibc.close(fd)
            throw LifeboatError("test.listen", "listen: \(String(cString: strerror(errno)))")
        }
        Thread { [self] in serve(behavior) }.start()
    }

    /// The requests received so far (`respond` servers).
    var requests: [String] { received.withLock { $0 } }

    private func serve(_ behavior: Behavior) {
        defer { finished.signal() }
        while !stopped.withLock({ $0 }) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 20) > 0 else { continue }
            let c = accept(fd, nil, nil)
            guard c >= 0 else { continue }
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            switch behavior {
            case .hold:
                held.withLock { $0.append(c) }
            case .closeAtOnce:
                Glibc.close(c)
            case .respond(let answer):
                var timeout = timeval(tv_sec: 2, tv_usec: 0)
                setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                var request: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 4096)
                while !request.ends(with: Array("\r\n\r\n".utf8)) {
                    let n = chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress!, $0.count, 0) }
                    if n <= 0 { break }
                    request += chunk[0..<n]
                }
                received.withLock { $0.append(String(decoding: request, as: UTF8.self)) }
                let bytes = Array(answer.utf8)
                if !bytes.isEmpty {
                    _ = bytes.withUnsafeBytes { send(c, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                }
                Glibc.close(c)
            }
        }
    }

    func close() {
        stopped.withLock { $0 = true }
        finished.wait()
        Glibc.close(fd)
        for c in held.withLock({ $0 }) { Glibc.close(c) }
    }
}

extension Array where Element: Equatable {
    fileprivate func ends(with suffix: [Element]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}

private enum Sockets {
    /// A TCP socket bound to 127.0.0.1 on a free port.
    static func bound() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw LifeboatError("test.socket", "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            Glibc.close(fd)
            throw LifeboatError("test.bind", "bind: \(String(cString: strerror(errno)))")
        }
        return fd
    }

    static func port(of fd: Int32) throws -> Int {
        var bound = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { throw LifeboatError("test.getsockname", "getsockname: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: bound.sin_port))
    }
}

/// A loopback port held by a bound socket that does not listen: connecting to it is refused, and no other
/// test takes the port meanwhile.
private final class RefusingPort {
    let fd: Int32
    let port: Int
    init() throws {
        fd = try Sockets.bound()
        port = try Sockets.port(of: fd)
    }
    func close() { Glibc.close(fd) }
}

/// What `onPassed` was told.
private final class Passed: Sendable {
    private let items = Mutex<[(AcceptanceCheck, CheckAttempt)]>([])
    func record(_ check: AcceptanceCheck, _ attempt: CheckAttempt) { items.withLock { $0.append((check, attempt)) } }
    var checks: [AcceptanceCheck] { items.withLock { $0.map(\.0) } }
    var details: [String] { items.withLock { $0.map(\.1.detail) } }
}

/// A counter for callbacks.
private final class Counter: Sendable {
    private let value = Mutex(0)
    func next() -> Int { value.withLock { $0 += 1; return $0 } }
    var count: Int { value.withLock { $0 } }
}

private func append(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
}

@Suite("Acceptance checks against real sockets, consoles and commands")
struct AcceptanceRunnerTests {
    static func target(host: String? = "127.0.0.1", ports: [Int: Int] = [:], console: String? = nil) -> CheckTarget {
        CheckTarget(instance: "ri-test", host: host, ports: ports, consoleLog: console)
    }

    static func runner(_ checks: [AcceptanceCheck], _ target: CheckTarget) -> AcceptanceRunner {
        var runner = AcceptanceRunner(checks: checks, target: target)
        runner.retryInterval = .milliseconds(10)
        return runner
    }

    /// One attempt of each check (the deadline has passed before the first one).
    fileprivate static func once(_ checks: [AcceptanceCheck], _ target: CheckTarget, passed: Passed = Passed()) async -> (check: AcceptanceCheck, attempt: CheckAttempt)? {
        await runner(checks, target).run(until: .now, isAlive: { true }, onPassed: passed.record)
    }

    /// A deadline for runs that are expected to pass: far enough that a loaded machine (the whole suite in
    /// parallel on two cores, cooperative threads busy) never reaches it; a passing run ends long before.
    static var soon: ContinuousClock.Instant { .now + .seconds(600) }

    // MARK: - TCP

    @Test("tcp: a listening port passes (the guest port is mapped to its host port); onPassed is told")
    func tcpOpen() async throws {
        let server = try LoopbackServer(.hold)
        defer { server.close() }
        let passed = Passed()
        let result = await Self.runner([.tcp(port: 22)], Self.target(ports: [22: server.port]))
            .run(until: Self.soon, isAlive: { true }, onPassed: passed.record)
        #expect(result == nil)
        #expect(passed.checks == [.tcp(port: 22)])
        #expect(passed.details == ["127.0.0.1:\(server.port) accepts connections"])
    }

    @Test("tcp: a port that is not mapped is reached as is")
    func tcpUnmappedPort() async throws {
        let server = try LoopbackServer(.hold)
        defer { server.close() }
        let result = await Self.once([.tcp(port: server.port)], Self.target(ports: [22: 1]))
        #expect(result == nil)
    }

    @Test("tcp: a refused connection fails with the reason")
    func tcpRefused() async throws {
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let passed = Passed()
        let result = try #require(await Self.once([.tcp(port: 22)], Self.target(ports: [22: refusing.port]), passed: passed))
        #expect(result.check == .tcp(port: 22))
        #expect(!result.attempt.passed)
        #expect(result.attempt.detail == "connect to 127.0.0.1:\(refusing.port): Connection refused")
        #expect(passed.checks.isEmpty)
    }

    @Test("tcp: a forward that accepts and closes at once is not an open port")
    func tcpClosedAtOnce() throws {
        let server = try LoopbackServer(.closeAtOnce)
        defer { server.close() }
        let attempt = AcceptanceRunner.tcpConnect(host: "127.0.0.1", port: server.port)
        #expect(!attempt.passed)
        #expect(attempt.detail == "127.0.0.1:\(server.port) closed the connection at once (nothing listens behind the forward)")
    }

    @Test("tcp and http without an address fail: nothing to reach")
    func noAddress() async {
        for check in [AcceptanceCheck.tcp(port: 22), .http(port: 80, path: "/", status: 200, bodyPattern: nil)] {
            let result = await Self.once([check], Self.target(host: nil))
            #expect(result?.check == check)
            #expect(result?.attempt.detail == "the instance has no reachable address")
        }
    }

    // MARK: - HTTP

    @Test("http: the right status and a matching body pass; the request is a plain GET of the path")
    func httpMatches() async throws {
        let server = try LoopbackServer(.respond("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nlifeboat fixture\nREADY\n"))
        defer { server.close() }
        let passed = Passed()
        let check = AcceptanceCheck.http(port: 80, path: "/health?full=1", status: 200, bodyPattern: "fixture\\s+READY")
        let result = await Self.runner([check], Self.target(ports: [80: server.port]))
            .run(until: Self.soon, isAlive: { true }, onPassed: passed.record)
        #expect(result == nil)
        #expect(passed.details == ["GET http://127.0.0.1:\(server.port)/health?full=1 → 200, body matches /fixture\\s+READY/"])
        let request = try #require(server.requests.first)
        #expect(request.hasPrefix("GET /health?full=1 HTTP/1.0\r\n"))
        #expect(request.contains("\r\nHost: 127.0.0.1\r\n"))
        #expect(request.hasSuffix("\r\n\r\n"))
    }

    @Test("http: a status check without a pattern passes on that status whatever the body")
    func httpStatusOnly() async throws {
        let server = try LoopbackServer(.respond("HTTP/1.1 204 No Content\r\nServer: test\r\n\r\n"))
        defer { server.close() }
        let passed = Passed()
        let result = await Self.once([.http(port: 80, path: "/", status: 204, bodyPattern: nil)], Self.target(ports: [80: server.port]), passed: passed)
        #expect(result == nil)
        #expect(passed.details == ["GET http://127.0.0.1:\(server.port)/ → 204"])
    }

    @Test("http: another status fails and says which")
    func httpWrongStatus() async throws {
        let server = try LoopbackServer(.respond("HTTP/1.0 503 Service Unavailable\r\n\r\nREADY"))
        defer { server.close() }
        let result = await Self.once([.http(port: 80, path: "/health", status: 200, bodyPattern: "READY")], Self.target(ports: [80: server.port]))
        #expect(result?.attempt.passed == false)
        #expect(result?.attempt.detail == "GET /health: status 503, expected 200")
    }

    @Test("http: the right status with a body that does not match fails and shows the body")
    func httpBodyMismatch() async throws {
        let server = try LoopbackServer(.respond("HTTP/1.0 200 OK\r\n\r\nunder maintenance"))
        defer { server.close() }
        let result = await Self.once([.http(port: 80, path: "/", status: 200, bodyPattern: "^READY$")], Self.target(ports: [80: server.port]))
        let detail = try #require(result?.attempt.detail)
        #expect(detail.hasPrefix("GET /: status 200 but the body does not match /^READY$/"))
        #expect(detail.contains("under maintenance"))
    }

    @Test("http: an answer that is not HTTP, or no answer at all, fails")
    func httpNotHTTP() async throws {
        let ssh = try LoopbackServer(.respond("SSH-2.0-OpenSSH_9.2\r\n\r\n"))
        defer { ssh.close() }
        let notHTTP = await Self.once([.http(port: 80, path: "/", status: 200, bodyPattern: nil)], Self.target(ports: [80: ssh.port]))
        #expect(notHTTP?.attempt.detail == "GET /: not an HTTP status line: SSH-2.0-OpenSSH_9.2")

        let silent = try LoopbackServer(.respond(""))
        defer { silent.close() }
        let nothing = await Self.once([.http(port: 80, path: "/", status: 200, bodyPattern: nil)], Self.target(ports: [80: silent.port]))
        #expect(nothing?.attempt.detail == "GET /: no complete HTTP answer (0 bytes)")

        let refusing = try RefusingPort()
        defer { refusing.close() }
        let refused = await Self.once([.http(port: 80, path: "/", status: 200, bodyPattern: nil)], Self.target(ports: [80: refusing.port]))
        #expect(refused?.attempt.detail == "connect to 127.0.0.1:\(refusing.port): Connection refused")
    }

    // MARK: - Serial console

    @Test("serial: the console is read as it grows; carriage returns and escape bytes are stripped; lines seen are kept")
    func serialGrowing() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-acceptance")
        let console = dir.child("console.log")  // does not exist yet: the machine has not written anything
        let chunks = [
            "SeaBIOS (version 1.16.2)\r\n\u{1b}[2J\u{1b}[0;37mBooting from Hard Disk...\r\n",
            "Welcome to Lif",
            "eboat\r\nREA",
            "DY\r\n",
        ]
        let calls = Counter()
        let passed = Passed()
        let checks: [AcceptanceCheck] = [
            .serial(pattern: "Booting from Hard Disk\\.\\.\\.$"),
            .serial(pattern: "^Welcome to Lifeboat$"),
            .serial(pattern: "^READY$"),
            .serial(pattern: "^SeaBIOS"),  // an early line, matched from what was read before
        ]
        // Each failed attempt asks whether the machine is alive: that is when the machine "writes" more.
        let result = await Self.runner(checks, Self.target(console: console)).run(
            until: Self.soon,
            isAlive: {
                let call = calls.next()
                if call <= chunks.count { append(console, chunks[call - 1]) }
                return true
            },
            onPassed: passed.record
        )
        #expect(result == nil)
        #expect(passed.checks == checks)
        #expect(calls.count == 4, "one failed attempt before each chunk")
        let details = passed.details
        #expect(details.count == 4)
        #expect(details.first?.hasSuffix("Booting from Hard Disk...") == true)
        #expect(details.allSatisfy { !$0.contains("\u{1b}") && !$0.contains("\r") }, "\(details)")
        #expect(details.dropFirst().elementsEqual(["console: Welcome to Lifeboat", "console: READY", "console: SeaBIOS (version 1.16.2)"]))
    }

    @Test("serial: an unterminated last line (a login prompt) counts")
    func serialPrompt() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-acceptance")
        let console = dir.child("console.log")
        append(console, "Debian GNU/Linux 12 web-1 ttyS0\r\n\r\nweb-1 login: ")
        let passed = Passed()
        let result = await Self.once([.serial(pattern: "login: $")], Self.target(console: console), passed: passed)
        #expect(result == nil)
        #expect(passed.details == ["console: web-1 login: "])
    }

    @Test("serial: no match yet, no console captured, or a bad pattern fail and say so")
    func serialFailures() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-acceptance")
        let console = dir.child("console.log")
        append(console, "line one\nline two\n")
        let noMatch = await Self.once([.serial(pattern: "READY")], Self.target(console: console))
        #expect(noMatch?.attempt.detail == "no console line matches /READY/ (2 lines so far)")
        let noConsole = await Self.once([.serial(pattern: "READY")], Self.target(console: nil))
        #expect(noConsole?.attempt.detail == "the launcher captures no serial console")
        let missingFile = await Self.once([.serial(pattern: "READY")], Self.target(console: dir.child("missing.log")))
        #expect(missingFile?.attempt.detail == "no console line matches /READY/ (0 lines so far)")
        let badPattern = await Self.once([.serial(pattern: "(")], Self.target(console: console))
        #expect(badPattern?.attempt.detail == "/(/ is not a valid pattern")
    }

    // MARK: - Command

    @Test("command: exit 0 passes with its output; the LIFEBOAT_* variables describe the instance")
    func commandPasses() async throws {
        let passed = Passed()
        let target = CheckTarget(instance: "ri-test", host: "127.0.0.1", ports: [80: 18080, 22: 10022], consoleLog: "/x/console.log")
        let command = #"printf '%s|%s|%s|%s|%s' "$LIFEBOAT_INSTANCE" "$LIFEBOAT_HOST" "$LIFEBOAT_PORT_80" "$LIFEBOAT_PORT_22" "$LIFEBOAT_CONSOLE""#
        let result = await Self.once([.command(command)], target, passed: passed)
        #expect(result == nil)
        #expect(passed.details == ["command exited 0: ri-test|127.0.0.1|18080|10022|/x/console.log"])
    }

    @Test("command: a non-zero exit fails with the status and the output")
    func commandFails() async throws {
        let result = await Self.once([.command("echo 'service not ready' >&2; exit 1")], Self.target())
        #expect(result?.check == .command("echo 'service not ready' >&2; exit 1"))
        #expect(result?.attempt.passed == false)
        #expect(result?.attempt.detail == "command exited 1: service not ready")
        let quiet = await Self.once([.command("exit 7")], Self.target())
        #expect(quiet?.attempt.detail == "command exited 7")
    }

    @Test("command environment: ours plus LIFEBOAT_*; no address or console gives empty values")
    func commandEnvironment() {
        let runner = AcceptanceRunner(checks: [], target: CheckTarget(instance: "ri-9", host: nil, ports: [443: 8443], consoleLog: nil))
        let environment = runner.commandEnvironment()
        #expect(environment["LIFEBOAT_INSTANCE"] == "ri-9")
        #expect(environment["LIFEBOAT_HOST"] == "")
        #expect(environment["LIFEBOAT_CONSOLE"] == "")
        #expect(environment["LIFEBOAT_PORT_443"] == "8443")
        #expect(environment["PATH"] == ProcessInfo.processInfo.environment["PATH"])
    }

    @Test("CheckTarget from a runtime takes its address, ports and console")
    func targetFromRuntime() {
        var runtime = InstanceRuntime(launcher: "qemu")
        runtime.host = "127.0.0.1"
        runtime.ports = [80: 40080]
        runtime.consoleLog = "/c.log"
        let target = CheckTarget(instance: "ri-1", runtime: runtime)
        #expect(target.instance == "ri-1")
        #expect(target.host == "127.0.0.1")
        #expect(target.ports == [80: 40080])
        #expect(target.consoleLog == "/c.log")
    }

    // MARK: - The run

    @Test("checks run in order; once one fails the later ones are not attempted")
    func order() async throws {
        let server = try LoopbackServer(.hold)
        defer { server.close() }
        let dir = try TemporaryDirectory(prefix: "lifeboat-acceptance")
        let marker = dir.child("third-ran")
        let passed = Passed()
        let checks: [AcceptanceCheck] = [.command("true"), .tcp(port: 22), .serial(pattern: "never"), .command("touch '\(marker)'")]
        let result = await Self.runner(checks, Self.target(ports: [22: server.port], console: dir.child("console.log")))
            .run(until: .now + .milliseconds(200), isAlive: { true }, onPassed: passed.record)
        #expect(result?.check == .serial(pattern: "never"))
        #expect(passed.checks == [.command("true"), .tcp(port: 22)])
        #expect(!FileTools.exists(marker))
    }

    @Test("at the deadline the failing check is returned with its last attempt; isAlive nil (cannot tell) keeps trying")
    func deadline() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-acceptance")
        let counter = dir.child("attempts")
        let command = "n=$(cat '\(counter)' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '\(counter)'; echo \"attempt $n\"; exit 1"
        let calls = Counter()
        let result = await Self.runner([.command(command)], Self.target())
            .run(until: .now + .milliseconds(300), isAlive: { _ = calls.next(); return nil }, onPassed: { _, _ in Issue.record("nothing passes") })
        let attempts = try #require(Int(String(decoding: try FileTools.read(counter), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(attempts >= 1)
        #expect(calls.count == attempts, "isAlive is asked after every failed attempt")
        #expect(result?.check == .command(command))
        #expect(result?.attempt.passed == false)
        #expect(result?.attempt.detail == "command exited 1: attempt \(attempts)", "the last attempt's detail")
    }

    @Test("a machine that stopped ends the run at once with the last detail")
    func machineStopped() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-acceptance")
        let counter = dir.child("attempts")
        let command = "n=$(cat '\(counter)' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '\(counter)'; echo \"attempt $n\"; exit 1"
        let result = await Self.runner([.command(command), .command("true")], Self.target())
            .run(until: .now + .seconds(120), isAlive: { false }, onPassed: { _, _ in Issue.record("nothing passes") })
        #expect(result?.check == .command(command))
        #expect(result?.attempt.detail == "the machine stopped: command exited 1: attempt 1")
        #expect(String(decoding: try FileTools.read(counter), as: UTF8.self) == "1\n", "a single attempt")
    }

    @Test("a cancelled run stops before attempting anything")
    func cancelled() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-acceptance")
        let marker = dir.child("ran")
        let runner = Self.runner([.command("touch '\(marker)'")], Self.target())
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await runner.run(until: .now + .seconds(120), isAlive: { true }, onPassed: { _, _ in })
        }
        let result = await task.value
        #expect(result?.check == .command("touch '\(marker)'"))
        #expect(result?.attempt.detail == "cancelled: the server is shutting down")
        #expect(!FileTools.exists(marker))
    }

    @Test("no checks: nothing to prove, the run passes at once")
    func noChecks() async {
        let result = await Self.runner([], Self.target(host: nil)).run(until: .now, isAlive: { false }, onPassed: { _, _ in Issue.record("nothing to pass") })
        #expect(result == nil)
    }
}
