#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import CLinuxShims
import LifeboatCore

/// A process started in its own session (so that a Ctrl-C or a restart of the server does not take the recovery
/// machine with it), stdin from /dev/null, stdout and stderr appended to a file.
///
/// Liveness is judged by the pid and a marker string in `/proc/PID/cmdline`, so a pid reused by another program
/// after the machine exited is never mistaken for it (nor signalled).
enum DetachedProcess {
    /// Starts `executable` with `arguments`; returns its pid.
    ///
    /// - Throws: `launch.spawn-failed` naming the executable and the reason.
    static func spawn(_ executable: String, _ arguments: [String], output: String, environment: [String: String]? = nil) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Not every descriptor of ours is close-on-exec (NIO's listening sockets are not): a machine that
        // inherited the NBD or replication listener would keep its port after the server stops.
        let closed = lifeboat_spawn_close_from(&actions, 3)
        guard closed == 0 else {
            throw LifeboatError("launch.spawn-failed", "cannot start \(executable): closing inherited descriptors is unsupported (\(String(cString: strerror(closed))))")
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // POSIX_SPAWN_SETSID (glibc ≥ 2.26): a new session, no controlling terminal, its own process group.
        // Signals reset to default so the child does not inherit the server's ignored ones.
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(0x80 | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) }
        defer { for p in argv { free(p) } }
        var argvNull = argv + [nil]
        let env = (environment ?? currentEnvironment()).map { strdup("\($0.key)=\($0.value)") }
        defer { for p in env { free(p) } }
        var envNull = env + [nil]
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, &argvNull, &envNull)
        guard rc == 0 else {
            throw LifeboatError(
                "launch.spawn-failed",
                "cannot start \(executable): \(String(cString: strerror(rc))) (is it installed? scripts/setup installs QEMU)"
            )
        }
        // Until the new program's arguments are in place its command line reads empty: wait (briefly) for them,
        // so that isAlive is right from the moment spawn returns.
        for _ in 0..<200 {
            // Without reaping: a caller may want the exit status of a child that ended at once.
            let state = state(pid)
            if state == nil || state == "Z" || (readProcFile("/proc/\(pid)/cmdline").map { !$0.isEmpty } ?? false) { break }
            usleep(5_000)
        }
        return pid
    }

    static func currentEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") {
                result[String(text[..<eq])] = String(text[text.index(after: eq)...])
            }
            p += 1
        }
        return result
    }

    /// Reaps `pid` if it is our exited child (no zombie stays); returns its exit status then.
    static func reap(_ pid: Int32) -> Int32? {
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        guard rc == pid else { return nil }
        return status
    }

    /// The state letter of `/proc/PID/stat` (R, S, D, Z, X, …); nil when there is no such process.
    static func state(_ pid: Int32) -> Character? {
        guard let text = readProcFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].first { !$0.isWhitespace }
    }

    /// True when no process `pid` runs any more (gone, or a zombie about to be reaped).
    static func isGone(_ pid: Int32) -> Bool {
        _ = reap(pid)
        guard let state = state(pid) else { return true }
        return state == "Z" || state == "X"
    }

    /// True when `pid` runs and its command line contains `marker`.
    ///
    /// A process between exec and its first instruction, or one that is exiting, briefly has an empty command
    /// line: `spawn` waits for the new one, `stop` waits with `isGone`.
    static func isAlive(_ pid: Int32, marker: String) -> Bool {
        guard !isGone(pid), let text = readProcFile("/proc/\(pid)/cmdline") else { return false }
        return text.contains(marker)
    }

    /// The pids of running processes whose command line contains `marker` (a machine started just before a
    /// crash, whose pid was never recorded).
    static func find(marker: String) -> [Int32] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var found: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = Int32(name), pid != getpid() else { continue }
            if isAlive(pid, marker: marker) { found.append(pid) }
        }
        return found
    }

    static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
    }

    /// SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone. Does nothing if it is not
    /// ours. Blocks (run it on a thread pool): it must finish even while the caller's task is being cancelled.
    static func stop(_ pid: Int32, marker: String, grace: Int = 10) {
        guard isAlive(pid, marker: marker) else { return }
        kill(pid, SIGTERM)
        for _ in 0..<(grace * 10) {
            if isGone(pid) { return }
            usleep(100_000)
        }
        // Still there (and not reaped, so the pid cannot have been reused).
        if !isGone(pid) { kill(pid, SIGKILL) }
        for _ in 0..<50 {
            if isGone(pid) { return }
            usleep(100_000)
        }
    }
}
