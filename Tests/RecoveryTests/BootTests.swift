#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import LifeboatCore
import LifeboatTesting
import Logging
import Recovery
import StagingStore
import Testing

/// The whole launch path with real parts: the fixture disk is ingested as a recovery point, served by our NBD
/// server through a copy-on-write overlay, and booted by QEMU (KVM when the probe says so, TCG otherwise) on a
/// test-mode network — QEMU user networking with `restrict=on` and one forwarded port.
@Suite("Boot a recovery point in QEMU over NBD", .serialized)
struct BootTests {
    /// A deadline a loaded machine cannot reach: alone, the TCG boot takes 11–15 s, but the whole suite runs
    /// chromium, schemathesis and other QEMU boots beside it on 2 cores (one run here missed 120 s while still in
    /// the BIOS).
    static let bootTimeout: Duration = .seconds(300)

    @Test("the fixture boots from an NBD overlay of a point, serves its file, cannot reach out; the point is unchanged")
    func bootFromPoint() async throws {
        let clock = ContinuousClock()
        let jobStart = clock.now
        let servedText = BootDisk.defaultServedText
        let image = try BootDisk.cached()
        let original = try FileTools.read(image)

        // The point.
        let dir = try TemporaryDirectory(prefix: "lifeboat-boot")
        let backend = LocalDirectoryBackend(root: dir.child("store"))
        let key = MasterKeySource.keyFile(path: dir.child("master.key"))
        try Store.create(at: backend, key: key)
        let store = try Store.open(backend, key: key, access: .write)
        let machine = "fixture"
        let commit = try store.ingest(machine: machine, volumes: [(name: "root", path: image)])
        let point = "\(commit.id)"

        // The instance's disk: the point through its own overlay.
        var logger = Logger(label: "boot-test")
        logger.logLevel = .warning
        let server = try NBDServer(configuration: .init(), logger: logger)
        let base = try PointExport(name: "base", store: store, machine: machine, volume: "root", point: point)
        let overlay = try OverlayExport(name: "instance", base: base, directory: dir.child("overlay"))
        try server.register(overlay)
        try await server.start()
        let nbdPort = try #require(server.port)

        // The forwarded web port, and a host listener the guest must not reach.
        let webPort = try Loopback.freePort()
        let outside = try Loopback.Listener()
        defer { outside.close() }
        let outcome = KVMProbe.probe(timeout: .seconds(3))
        let accelerator = outcome.accelerator
        print("BootTests: \(outcome) → accel \(accelerator)")

        let guest = try Guest(
            drive: "file=nbd://127.0.0.1:\(nbdPort)/instance,format=raw,if=virtio",
            accelerator: accelerator,
            network: "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:\(webPort)-:80",
            egressPort: outside.port,
            directory: dir.path
        )
        defer { guest.stop() }

        // READY on the serial console.
        let ready = try await guest.waitFor(BootDisk.readyMarker, until: jobStart + Self.bootTimeout)
        let bootTime = clock.now - jobStart
        guard ready != nil else {
            guest.stop()
            Issue.record(
                "no \(BootDisk.readyMarker) within \(Self.bootTimeout) (accel \(accelerator)).\n\(guest.diagnostics())"
            )
            try overlay.close()
            try await server.close()
            store.close()
            return
        }
        print("BootTests: boot time (job start → \(BootDisk.readyMarker)) \(bootTime), accel \(accelerator)")

        // The web server answers through the one forwarded port.
        var body: String?
        var lastError = ""
        let httpStart = clock.now
        while body == nil && clock.now - httpStart < .seconds(20) {
            do {
                body = try Loopback.get(port: webPort, path: "/index.html")
            } catch {
                lastError = "\(error)"
                try await Task.sleep(for: .milliseconds(250))
            }
        }
        #expect(body == servedText, "GET /index.html: \(body.map { "\"\($0)\"" } ?? lastError)")

        // Egress: the guest tried the host listener through the gateway; restrict=on must have dropped it.
        let egressLine = try await guest.waitFor(BootDisk.egressMarker, until: clock.now + .seconds(30))
        guest.stop()
        #expect(
            egressLine?.contains("blocked") == true,
            "the guest's egress check: \(egressLine ?? "no line").\n\(guest.diagnostics())"
        )
        #expect(outside.connections == 0, "the guest reached a host port through the restricted network")
        print("BootTests: \(egressLine ?? "no egress line"); host listener saw no connection")

        // The guest wrote (it mounts its root read-write) — into the overlay only.
        #expect(overlay.changedBlocks > 0, "the guest's writes (journal, superblock) went to the overlay")
        try overlay.close()
        try await server.close()
        let exported = dir.child("after.img")
        _ = try store.export(try store.reader(machine: machine, volume: "root", point: point), to: exported)
        expectSameBytes(try FileTools.read(exported), original, "the point after the boot vs the fixture image")
        let report = try store.verify()
        #expect(report.isClean, "store verify: \(report.problems)")
        store.close()
    }

    @Test("control for the egress check: without restrict=on the same guest does reach the host listener")
    func egressControl() async throws {
        let image = try BootDisk.cached()
        let dir = try TemporaryDirectory(prefix: "lifeboat-boot-control")
        let outside = try Loopback.Listener()
        defer { outside.close() }
        let accelerator = KVMProbe.detect(timeout: .seconds(3))
        let clock = ContinuousClock()
        // The cached image itself, with snapshot=on: QEMU keeps the guest's writes in a temporary file.
        let guest = try Guest(
            drive: "file=\(image),format=raw,if=virtio,snapshot=on",
            accelerator: accelerator,
            network: "user,id=n0",
            egressPort: outside.port,
            directory: dir.path
        )
        defer { guest.stop() }
        let line = try await guest.waitFor(BootDisk.egressMarker, until: clock.now + Self.bootTimeout + .seconds(30))
        guest.stop()
        #expect(line?.contains("open") == true, "egress line: \(line ?? "none").\n\(guest.diagnostics())")
        #expect(outside.connections > 0, "the unrestricted guest's wget should have reached the host listener")
    }
}

/// One QEMU guest booting the fixture disk with its serial console in a file.
private final class Guest {
    let process = Process()
    let serialLog: String
    let outputLog: String

    init(drive: String, accelerator: Accelerator, network: String, egressPort: Int, directory: String) throws {
        serialLog = directory + "/serial.log"
        outputLog = directory + "/qemu.out"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-system-x86_64")
        process.arguments =
            [
                "-machine", "q35", "-accel", accelerator.qemuName, "-m", "256",
                "-nographic", "-monitor", "none", "-no-reboot",
                "-serial", "file:\(serialLog)",
                "-drive", drive,
                "-netdev", network,
                "-device", "virtio-net-pci,netdev=n0",
            ] + BootDisk.egressProbeArguments(port: egressPort)
        _ = FileManager.default.createFile(atPath: outputLog, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputLog))
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    func serial() -> String { String(decoding: (try? FileTools.read(serialLog)) ?? [], as: UTF8.self) }

    func diagnostics() -> String {
        let output = String(decoding: (try? FileTools.read(outputLog)) ?? [], as: UTF8.self)
        let command = process.arguments?.joined(separator: " ") ?? ""
        return "qemu \(command)\nqemu output:\n\(output)\nserial console:\n\(serial())"
    }

    /// The first console line containing `marker` (from the marker on), or nil at `deadline` or when QEMU has exited.
    func waitFor(_ marker: String, until deadline: ContinuousClock.Instant) async throws -> String? {
        while ContinuousClock.now < deadline {
            let console = serial()
            // Contains, not prefix: the console may put escape sequences before a line.
            if let line = console.split(whereSeparator: \.isNewline).first(where: { $0.contains(marker) }),
                let at = line.range(of: marker)
            {
                return line[at.lowerBound...].trimmingCharacters(in: .whitespacesAndNewlines)
            }
            if !process.isRunning { return nil }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    /// SIGTERM, then SIGKILL after five seconds; waits for the exit. Idempotent.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        for _ in 0..<50 where process.isRunning { usleep(100_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// Loopback TCP for the test: a free port, a listener that counts connections, an HTTP/1.0 GET.
private enum Loopback {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func address(port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port)).bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return a
    }

    static func socketFD(flags: Int32 = 0) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | flags, 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        return fd
    }

    static func bind(_ fd: Int32, port: Int) throws -> Int {
        var a = address(port: port)
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { throw Failure(description: "bind: \(String(cString: strerror(errno)))") }
        var bound = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: bound.sin_port))
    }

    /// A port that was free a moment ago (QEMU binds it for hostfwd).
    static func freePort() throws -> Int {
        let fd = try socketFD()
        defer { close(fd) }
        return try bind(fd, port: 0)
    }

    /// A tiny HTTP server on 127.0.0.1 that answers every connection with `200 OK` and counts them.
    final class Listener: @unchecked Sendable {
        let fd: Int32
        let port: Int
        private let accepted = LockedValue(0)
        private let stopped = LockedValue(false)
        private let finished = DispatchSemaphore(value: 0)

        init() throws {
            fd = try Loopback.socketFD(flags: Int32(SOCK_NONBLOCK.rawValue))
            port = try Loopback.bind(fd, port: 0)
            guard listen(fd, 16) == 0 else { throw Failure(description: "listen: \(String(cString: strerror(errno)))") }
            Thread { [self] in serve() }.start()
        }

        private func serve() {
            defer { finished.signal() }
            let answer = Array("HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nreached\n".utf8)
            while !stopped.value {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 100) > 0 else { continue }
                let c = accept(fd, nil, nil)
                guard c >= 0 else { continue }
                accepted.value += 1
                var timeout = timeval(tv_sec: 2, tv_usec: 0)
                setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                var request = [UInt8](repeating: 0, count: 4096)
                _ = request.withUnsafeMutableBytes { recv(c, $0.baseAddress!, $0.count, 0) }
                _ = answer.withUnsafeBytes { send(c, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                Glibc.close(c)
            }
        }

        /// How many connections were accepted so far.
        var connections: Int { accepted.value }

        /// Stops serving and closes the socket.
        func close() {
            stopped.value = true
            finished.wait()
            Glibc.close(fd)
        }
    }

    /// GET `path` from 127.0.0.1:`port`; the body of a 200 answer.
    static func get(port: Int, path: String) throws -> String {
        let fd = try socketFD()
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var a = address(port: port)
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            throw Failure(description: "connect to port \(port): \(String(cString: strerror(errno)))")
        }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress!, $0.count, 0) }) == request.count else {
            throw Failure(description: "send: \(String(cString: strerror(errno)))")
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 { throw Failure(description: "recv: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            response.append(contentsOf: chunk[0..<n])
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else {
            throw Failure(description: "no complete HTTP answer: \"\(text)\"")
        }
        let status = text[..<split.lowerBound].split(separator: "\r\n").first ?? ""
        guard status.contains(" 200") else { throw Failure(description: "HTTP status \"\(status)\"") }
        return String(text[split.upperBound...])
    }
}
