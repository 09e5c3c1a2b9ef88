import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

// Helpers for ResilienceTests: a continuously running agent process that can be killed, a seeded block writer,
// a record of the exact bytes of chosen recovery points, a TCP proxy under the test's control, and polling.

// MARK: - A continuously running agent

/// `lifeboat agent run` (no `--once`) in the background, its stdout and stderr in its own log file.
final class AgentRunner: @unchecked Sendable {
    let process: Process
    let log: String

    init(state: String, volumes: [String], log: String, interval: Double = 0.2, extra: [String] = []) throws {
        self.log = log
        process = try ReplicationSite.background(
            ["agent", "run", "--state", state, "--interval", String(interval)] + volumes.flatMap { ["--volume", $0] } + extra,
            log: log
        )
    }

    deinit { kill9() }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// SIGKILL, then reap.
    func kill9() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// SIGTERM (graceful: the agent says goodbye), SIGKILL if it has not ended after `grace` seconds.
    @discardableResult
    func stop(grace: Double = 20) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning {
            Issue.record("the agent did not stop on SIGTERM within \(grace) s")
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    func text() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
}

// MARK: - Writes to the protected image

/// Overwrites seeded random 4 KiB blocks of an image file with seeded random bytes.
struct BlockWriter {
    let image: String
    let blockCount: Int
    var rng: SeededRandom
    private(set) var blocksWritten = 0

    init(image: String, size: Int, seed: UInt64) {
        self.image = image
        blockCount = size / 4096
        rng = SeededRandom(seed: seed)
    }

    mutating func write(blocks: Int) throws {
        for _ in 0..<blocks {
            let block = rng.below(blockCount)
            try FileTools.write(image, rng.bytes(4096), at: Int64(block) * 4096)
            blocksWritten += 1
        }
    }
}

// MARK: - Expected contents of recovery points

/// Recovery points whose exact bytes the test knows (a copy of the image taken while nothing wrote to it).
final class ExpectedPoints {
    let directory: String
    private(set) var points: [(point: String, file: String)] = []

    init(directory: String) throws {
        self.directory = directory
        try FileTools.makeDirectory(directory)
    }

    /// Remembers that `point` holds the image as it is now.
    func record(point: String, image: String) throws {
        let file = directory + "/" + point + ".img"
        try FileTools.write(file, try FileTools.read(image))
        points.append((point, file))
    }

    /// Exports every recorded point and compares it with what it held; returns a description per mismatch.
    func mismatches(site: ReplicationSite, machine: String, volume: String) throws -> [String] {
        var problems: [String] = []
        for (point, file) in points {
            let out = site.dir.child("check-\(point).img")
            defer { try? FileManager.default.removeItem(atPath: out) }
            let r = try ReplicationSite.lifeboat(
                ["store", "export"] + site.storeArguments + ["--machine", machine, "--volume", volume, "--point", point, "--output", out]
            )
            guard r.status == 0 else {
                problems.append("point \(point) cannot be exported: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
                continue
            }
            if let at = ByteCompare.firstDifference(try FileTools.read(out), try FileTools.read(file)) {
                problems.append("point \(point) differs from the bytes it was acknowledged with, first at offset \(at)")
            }
        }
        return problems
    }
}

// MARK: - Site helpers

extension ReplicationSite {
    /// Enrolls an agent state directory as `machine` with the server reached at `server` (e.g. a proxy).
    @discardableResult
    func enroll(_ machine: String, via server: String) throws -> String {
        let stateDir = dir.child("agent-\(machine)")
        let r = try Self.lifeboat(["agent", "enroll", "--server", server, "--token", try token(), "--state", stateDir, "--name", machine])
        try #require(r.status == 0, "enroll failed: \(r.stderr)")
        return stateDir
    }

    /// Changes a key of `server.json` (only while the server is stopped).
    func configure(_ key: String, _ value: Any) throws {
        let path = data + "/server.json"
        var config = try #require(try JSONSerialization.jsonObject(with: Data(FileTools.read(path))) as? [String: Any])
        config[key] = value
        try FileTools.write(path, Array(try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])))
    }

    /// `lifeboat store verify` on the server's store.
    func verify() throws -> ProcessResult {
        try Self.lifeboat(["store", "verify"] + storeArguments)
    }

    /// Exports the latest point of a volume to a file; returns (point id, path) or nil when there is none.
    func exportLatest(machine: String, volume: String) throws -> (point: String, file: String)? {
        guard let latest = try points(machine: machine).last?["point"] as? String else { return nil }
        let out = dir.child("latest-\(latest).img")
        let r = try Self.lifeboat(
            ["store", "export"] + storeArguments + ["--machine", machine, "--volume", volume, "--point", latest, "--output", out]
        )
        guard r.status == 0 else { return nil }
        return (latest, out)
    }

    /// Waits (writes paused) until the latest point holds exactly `image`; returns that point's id.
    func waitForLatest(equalTo image: String, machine: String, volume: String, timeout: Double = 45) throws -> String? {
        let expected = try FileTools.read(image)
        var found: String?
        _ = poll(timeout: timeout, every: 0.2) {
            guard let (point, file) = try? exportLatest(machine: machine, volume: volume) else { return false }
            defer { try? FileManager.default.removeItem(atPath: file) }
            guard let bytes = try? FileTools.read(file), ByteCompare.firstDifference(bytes, expected) == nil else { return false }
            found = point
            return true
        }
        return found
    }

    /// Waits until `machines list --json` shows the machine in `state` (and `connected`, if given).
    /// Returns the last record seen and whether it matched.
    func waitForState(_ machine: String, _ state: String, connected: Bool? = nil, timeout: Double = 30) -> (ok: Bool, last: [String: Any]?) {
        var last: [String: Any]?
        let ok = poll(timeout: timeout, every: 0.1) {
            do {
                last = try self.machine(machine)
            } catch {
                last = ["error": "\(error)"]
            }
            guard let last, last["state"] as? String == state else { return false }
            if let connected, last["connected"] as? Bool != connected { return false }
            return true
        }
        return (ok, last)
    }

    /// The point ids the server logged as acknowledged ("commit acknowledged … point=ID").
    func acknowledgedPoints() -> [String] {
        log().split(separator: "\n").filter { $0.contains("commit acknowledged") }.compactMap { line in
            line.split(separator: " ").first { $0.hasPrefix("point=") }.map { String($0.dropFirst(6)) }
        }
    }

    /// `changed_bytes` per point, in commit order.
    func changedBytes(machine: String) throws -> [(point: String, sequence: Int, bytes: Int)] {
        try points(machine: machine).map {
            (($0["point"] as? String) ?? "?", ($0["sequence"] as? Int) ?? -1, ($0["changed_bytes"] as? Int) ?? -1)
        }
    }
}

/// Calls `condition` until it is true or `timeout` seconds passed; true when it became true.
@discardableResult
func poll(timeout: Double, every interval: Double = 0.1, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if condition() { return true }
        if Date() >= deadline { return false }
        Thread.sleep(forTimeInterval: interval)
    }
}

func sleep(seconds: Double) { Thread.sleep(forTimeInterval: seconds) }

/// One line per warning "replication interrupted; reconnecting" of an agent log: the retry delay it chose and
/// whether a successful connection ("connected") came between it and the previous interruption.
struct ReconnectRecord: CustomStringConvertible {
    var retryIn: String
    var afterSuccessfulSession: Bool
    var description: String { "retry-in=\(retryIn)\(afterSuccessfulSession ? " (after a session had been established)" : "")" }
}

func reconnects(inAgentLog text: String) -> [ReconnectRecord] {
    var out: [ReconnectRecord] = []
    var connectedSinceLast = true  // the first interruption follows the first session (or none)
    for line in text.split(separator: "\n") {
        if line.hasSuffix("[Agent] connected") {
            connectedSinceLast = true
        } else if line.contains("replication interrupted; reconnecting") {
            var retry = "?"
            if let range = line.range(of: "retry-in=") {
                let rest = line[range.upperBound...]
                // "retry-in=0.5 seconds" / "retry-in=1.0 seconds"
                let words = rest.split(separator: " ")
                retry = words.prefix(2).joined(separator: " ")
            }
            out.append(ReconnectRecord(retryIn: retry, afterSuccessfulSession: connectedSinceLast))
            connectedSinceLast = false
        }
    }
    return out
}

// MARK: - A TCP proxy under test control

/// A TCP proxy (python3) between agents and the server: `cut` closes every connection and refuses new ones,
/// `restore` listens again on the same port, `hold` stops forwarding bytes but keeps connections open (a
/// half-open link), `resume` forwards again. It exits when the test closes its stdin.
final class TCPProxy: @unchecked Sendable {
    let process: Process
    private let input: Pipe
    private let output: Pipe
    private var buffer = Data()
    private(set) var port: Int = 0
    let log: String

    static let script = #"""
        import socket, sys, threading, os
        target = (sys.argv[1], int(sys.argv[2]))
        cond = threading.Condition()
        state = {"mode": "open", "listener": None, "port": 0}
        conns = set()

        def log(*a):
            print(*a, file=sys.stderr, flush=True)

        def shut(s):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass

        def wait_open():
            with cond:
                while state["mode"] == "hold":
                    cond.wait()

        def pump(src, dst, name):
            try:
                while True:
                    wait_open()
                    data = src.recv(65536)
                    wait_open()
                    if not data:
                        break
                    dst.sendall(data)
            except OSError as e:
                log(name, "error", e)
            finally:
                with cond:
                    conns.discard(src); conns.discard(dst)
                shut(src); shut(dst)
                try: src.close()
                except OSError: pass

        def serve(listener):
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                try:
                    upstream = socket.create_connection(target)
                except OSError as e:
                    log("upstream failed", e)
                    client.close()
                    continue
                for s in (client, upstream):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with cond:
                    if state["mode"] == "cut":
                        shut(client); shut(upstream); client.close(); upstream.close()
                        continue
                    conns.add(client); conns.add(upstream)
                log("connection", client.getpeername())
                threading.Thread(target=pump, args=(client, upstream, "up"), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client, "down"), daemon=True).start()

        def listen():
            l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            l.bind(("127.0.0.1", state["port"]))
            l.listen(64)
            state["port"] = l.getsockname()[1]
            state["listener"] = l
            threading.Thread(target=serve, args=(l,), daemon=True).start()

        listen()
        print("port", state["port"], flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            with cond:
                if cmd == "cut":
                    state["mode"] = "cut"
                    shut(state["listener"]); state["listener"].close()
                    for s in list(conns): shut(s)
                    cond.notify_all()
                elif cmd == "restore":
                    state["mode"] = "open"
                    listen()
                elif cmd == "hold":
                    state["mode"] = "hold"
                elif cmd == "resume":
                    state["mode"] = "open"
                    cond.notify_all()
                n = len(conns)
            log("command", cmd, "connections", n)
            print("ok", cmd, n, flush=True)
        os._exit(0)
        """#

    init(target: String, log: String) throws {
        self.log = log
        let parts = target.split(separator: ":")
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-u", "-c", Self.script, String(parts[0]), String(parts[1])]
        input = Pipe()
        output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try process.run()
        let first = try readLine()
        guard first.hasPrefix("port "), let p = Int(first.dropFirst(5)) else {
            throw LifeboatError("test.proxy", "the proxy did not start: \(first)")
        }
        port = p
    }

    deinit { close() }

    var address: String { "127.0.0.1:\(port)" }

    func close() {
        guard process.isRunning else { return }
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Sends a command and waits for its "ok"; returns the number of live connections the proxy had after it.
    @discardableResult
    func command(_ cmd: String) throws -> Int {
        input.fileHandleForWriting.write(Data((cmd + "\n").utf8))
        let line = try readLine()
        guard line.hasPrefix("ok \(cmd)") else { throw LifeboatError("test.proxy", "proxy answered '\(line)' to \(cmd)") }
        return Int(line.split(separator: " ").last ?? "") ?? -1
    }

    func cut() throws { try command("cut") }
    func restore() throws { try command("restore") }
    func hold() throws { try command("hold") }
    func resume() throws { try command("resume") }

    private func readLine() throws -> String {
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                buffer = Data(buffer[(nl + 1)...])
                return line
            }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw LifeboatError("test.proxy", "the proxy exited: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")") }
            buffer.append(chunk)
        }
    }
}

// MARK: - A small tmpfs for the server's store

/// Puts the store directory of a server data directory (not yet running) on a tmpfs of `megabytes` MiB, keeping
/// what `server init` put there. `unmount()` after the server stopped.
final class TmpfsStore {
    let mountPoint: String
    private var mounted = false

    init(data: String, megabytes: Int) throws {
        mountPoint = data + "/store"
        let saved = data + "/store.orig"
        try #require(rename(mountPoint, saved) == 0, "cannot move the store aside")
        try FileTools.makeDirectory(mountPoint)
        let m = try Processes.run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", mountPoint])
        try #require(m.status == 0, "mount failed: \(m.stderr)")
        mounted = true
        let cp = try Processes.run("/bin/cp", ["-a", saved + "/.", mountPoint + "/"])
        try #require(cp.status == 0, "copy failed: \(cp.stderr)")
        try FileTools.removeTree(saved)
    }

    deinit { unmount() }

    func unmount() {
        guard mounted else { return }
        mounted = false
        let r = try? Processes.run("/usr/bin/umount", [mountPoint])
        if r?.status != 0 {
            _ = try? Processes.run("/usr/bin/umount", ["-l", mountPoint])
        }
    }

    /// Free bytes on the tmpfs.
    func freeBytes() -> Int64 {
        var s = statvfs()
        guard statvfs(mountPoint, &s) == 0 else { return -1 }
        return Int64(s.f_bavail) * Int64(s.f_frsize)
    }

    /// Fills the tmpfs with `name` until writing fails; returns the bytes written.
    @discardableResult
    func fill(_ name: String) -> Int64 {
        let path = mountPoint + "/" + name
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var total: Int64 = 0
        var chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { write(fd, $0.baseAddress!, $0.count) }
            if n <= 0 {
                // Fill the last partial space in 4 KiB steps.
                if chunk.count > 4096 {
                    chunk = [UInt8](repeating: 0x5a, count: 4096)
                    continue
                }
                break
            }
            total += Int64(n)
        }
        return total
    }
}
