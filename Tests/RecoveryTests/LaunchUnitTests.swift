#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import LifeboatCore
import LifeboatTesting
import Synchronization
import Testing

@testable import Recovery

/// Lines a launcher logged.
private final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
    var sink: @Sendable (String) -> Void { { [self] in append($0) } }
}

/// Runs `body`, expects a `LifeboatError` with `code`, and returns it.
@discardableResult
private func expectCode(
    _ code: String,
    sourceLocation: Testing.SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async -> LifeboatError? {
    do {
        try await body()
        Issue.record("expected an error with code \(code), but nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as LifeboatError {
        #expect(error.code.rawValue == code, "expected \(code), got [\(error.code)] \(error.message)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected a LifeboatError \(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

private enum Fixture {
    static let instance = "ri-0123456789abcdef"
    static let capture = Timestamp(seconds: 1_796_009_131)  // 2026-11-30T03:25:31Z

    static func nbd(_ volume: String, port: Int = 10809, tls: String? = nil) -> LaunchDisk {
        var disk = LaunchDisk(volume: volume, size: 1 << 30)
        disk.nbdHost = "127.0.0.1"
        disk.nbdPort = port
        disk.nbdExport = "\(instance)-\(volume)"
        disk.nbdURI = "nbd://127.0.0.1:\(port)/\(instance)-\(volume)"
        disk.nbdTLSDirectory = tls
        return disk
    }

    static func request(
        mode: LaunchMode = .test,
        disks: [LaunchDisk] = [nbd("root")],
        settings: LaunchSettings = LaunchSettings(),
        point: UInt64 = 42,
        directory: String = "/var/lib/lifeboat/instances/ri-0123456789abcdef"
    ) -> LaunchRequest {
        LaunchRequest(
            instance: instance, job: "job-00000000000000aa", machine: "web-1", mode: mode, point: point,
            pointCaptureTime: capture, disks: disks, settings: settings, directory: directory
        )
    }

    static func settings(_ change: (inout LaunchSettings) -> Void) -> LaunchSettings {
        var s = LaunchSettings()
        change(&s)
        return s
    }
}

/// The values that follow each occurrence of `flag`.
private func values(of flag: String, in args: [String]) -> [String] {
    args.indices.filter { args[$0] == flag && $0 + 1 < args.count }.map { args[$0 + 1] }
}

// MARK: - QEMU command line

@Suite("QEMU launcher: the command line")
struct QEMUArgumentsTests {
    let console = "/var/lib/lifeboat/instances/ri-0123456789abcdef/console.log"

    @Test("TEST: isolated user network (restrict=on) with each forward on 127.0.0.1, sorted by guest port")
    func testModeNetwork() throws {
        let settings = Fixture.settings {
            $0.checks = [.http(port: 80, path: "/", status: 200, bodyPattern: nil), .tcp(port: 22)]
            $0.vcpus = 2
            $0.memoryMiB = 1024
        }
        let args = try QEMULauncher.arguments(
            for: Fixture.request(mode: .test, settings: settings), accelerator: .tcg, forwards: [80: 40080, 22: 40022],
            console: console
        )
        #expect(values(of: "-netdev", in: args) == ["user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:40080-:80"])
        #expect(values(of: "-device", in: args).contains("virtio-net-pci,netdev=n0"))
        #expect(!args.contains("-nic"))
        #expect(values(of: "-name", in: args) == ["web-1,process=lifeboat-\(Fixture.instance)"])
        #expect(values(of: "-machine", in: args) == ["q35"])
        #expect(values(of: "-accel", in: args) == ["tcg"])
        #expect(values(of: "-smp", in: args) == ["2"])
        #expect(values(of: "-m", in: args) == ["1024"])
        #expect(values(of: "-display", in: args) == ["none"])
        #expect(values(of: "-monitor", in: args) == ["none"])
        #expect(values(of: "-serial", in: args) == ["file:\(console)"])
        #expect(!args.contains("-cpu"), "TCG does not pass the host CPU through")
        #expect(!args.joined(separator: " ").contains("tls"))
    }

    @Test("TEST stays isolated whatever recovery network the machine has")
    func testModeIgnoresRecoveryNetwork() throws {
        for network in [RecoveryNetwork.bridge("br0"), .tap("tap0"), .none, .user] {
            let settings = Fixture.settings { $0.recoveryNetwork = network }
            let args = try QEMULauncher.arguments(
                for: Fixture.request(mode: .test, settings: settings), accelerator: .tcg, forwards: [:], console: console
            )
            #expect(values(of: "-netdev", in: args) == ["user,id=n0,restrict=on"], "\(network)")
            #expect(!args.contains("-nic"))
        }
    }

    @Test("KVM adds -cpu host")
    func kvm() throws {
        let args = try QEMULauncher.arguments(for: Fixture.request(), accelerator: .kvm, forwards: [:], console: console)
        #expect(values(of: "-accel", in: args) == ["kvm"])
        #expect(values(of: "-cpu", in: args) == ["host"])
    }

    @Test("every disk: an NBD blockdev that reconnects and a virtio-blk device, boot indexes in disk order")
    func disks() throws {
        let request = Fixture.request(disks: [Fixture.nbd("root"), Fixture.nbd("data", port: 20000), Fixture.nbd("logs")])
        let args = try QEMULauncher.arguments(for: request, accelerator: .tcg, forwards: [:], console: console)
        #expect(values(of: "-blockdev", in: args) == [
            "driver=nbd,node-name=disk0,server.type=inet,server.host=127.0.0.1,server.port=10809,export=\(Fixture.instance)-root,reconnect-delay=60",
            "driver=nbd,node-name=disk1,server.type=inet,server.host=127.0.0.1,server.port=20000,export=\(Fixture.instance)-data,reconnect-delay=60",
            "driver=nbd,node-name=disk2,server.type=inet,server.host=127.0.0.1,server.port=10809,export=\(Fixture.instance)-logs,reconnect-delay=60",
        ])
        #expect(values(of: "-device", in: args).filter { $0.hasPrefix("virtio-blk") } == [
            "virtio-blk-pci,drive=disk0,bootindex=1",
            "virtio-blk-pci,drive=disk1,bootindex=2",
            "virtio-blk-pci,drive=disk2,bootindex=3",
        ])
        // Each device follows its blockdev.
        for index in 0..<3 {
            let blockdev = try #require(args.firstIndex { $0.contains("node-name=disk\(index),") })
            let device = try #require(args.firstIndex(of: "virtio-blk-pci,drive=disk\(index),bootindex=\(index + 1)"))
            #expect(blockdev < device)
        }
        #expect(!args.contains("-object"))
    }

    @Test("TLS: one tls-creds-x509 object before the disks, and every NBD blockdev uses it")
    func tls() throws {
        let request = Fixture.request(disks: [Fixture.nbd("root", tls: "/etc/lifeboat/nbd-tls"), Fixture.nbd("data", tls: "/etc/lifeboat/nbd-tls")])
        let args = try QEMULauncher.arguments(for: request, accelerator: .tcg, forwards: [:], console: console)
        #expect(values(of: "-object", in: args) == ["tls-creds-x509,id=nbdtls,dir=/etc/lifeboat/nbd-tls,endpoint=client,verify-peer=on"])
        let blockdevs = values(of: "-blockdev", in: args)
        #expect(blockdevs.count == 2)
        #expect(blockdevs.allSatisfy { $0.hasSuffix(",reconnect-delay=60,tls-creds=nbdtls") }, "\(blockdevs)")
        let object = try #require(args.firstIndex(of: "-object"))
        let firstDisk = try #require(args.firstIndex(of: "-blockdev"))
        #expect(object < firstDisk)
    }

    @Test("an exported image is attached as a file blockdev in its format")
    func imageDisk() throws {
        var disk = LaunchDisk(volume: "root", size: 1 << 30)
        disk.imagePath = "/data/ri-1/root.qcow2"
        disk.imageFormat = "qcow2"
        let args = try QEMULauncher.arguments(for: Fixture.request(disks: [disk]), accelerator: .tcg, forwards: [:], console: console)
        #expect(values(of: "-blockdev", in: args) == ["driver=qcow2,node-name=disk0,file.driver=file,file.filename=/data/ri-1/root.qcow2"])
        #expect(values(of: "-device", in: args).contains("virtio-blk-pci,drive=disk0,bootindex=1"))
    }

    @Test("no disks, or a disk with neither an export nor an image, is launch.no-disks")
    func noDisks() async {
        let none = await expectCode("launch.no-disks") {
            _ = try QEMULauncher.arguments(for: Fixture.request(disks: []), accelerator: .tcg, forwards: [:], console: console)
        }
        #expect(none?.message == "machine web-1 has no volume at point 42")
        var half = LaunchDisk(volume: "data", size: 1)
        half.nbdHost = "127.0.0.1"  // no port, no export
        let bad = await expectCode("launch.no-disks") {
            _ = try QEMULauncher.arguments(for: Fixture.request(disks: [Fixture.nbd("root"), half]), accelerator: .tcg, forwards: [:], console: console)
        }
        #expect(bad?.message.contains("volume data") == true)
    }

    @Test("a path with a comma (QEMU's option separator) is refused as launch.bad-path, never passed on")
    func commaInPath() async {
        var disk = LaunchDisk(volume: "root", size: 1 << 30)
        disk.imagePath = "/data/a,b/root.raw"
        disk.imageFormat = "raw"
        let image = await expectCode("launch.bad-path") {
            _ = try QEMULauncher.arguments(for: Fixture.request(disks: [disk]), accelerator: .tcg, forwards: [:], console: console)
        }
        #expect(image?.message.contains("/data/a,b/root.raw") == true)
        _ = await expectCode("launch.bad-path") {
            _ = try QEMULauncher.arguments(for: Fixture.request(), accelerator: .tcg, forwards: [:], console: "/x,y/console.log")
        }
        _ = await expectCode("launch.bad-path") {
            _ = try QEMULauncher.arguments(
                for: Fixture.request(disks: [Fixture.nbd("root", tls: "/tls,dir")]), accelerator: .tcg, forwards: [:], console: console
            )
        }
    }

    @Test("RECOVERY on user networking: the same forwards, outbound allowed (no restrict)")
    func recoveryUser() throws {
        let settings = Fixture.settings { $0.checks = [.tcp(port: 22)]; $0.forwardPorts = [443] }
        let args = try QEMULauncher.arguments(
            for: Fixture.request(mode: .recovery, settings: settings), accelerator: .tcg, forwards: [443: 50443, 22: 50022],
            console: console
        )
        #expect(values(of: "-netdev", in: args) == ["user,id=n0,hostfwd=tcp:127.0.0.1:50022-:22,hostfwd=tcp:127.0.0.1:50443-:443"])
        #expect(!args.joined(separator: " ").contains("restrict"))
        #expect(values(of: "-device", in: args).contains("virtio-net-pci,netdev=n0"))
    }

    @Test("RECOVERY on a bridge or tap: attached there, no forwards; checks on ports need --recovery-address")
    func recoveryBridgeAndTap() async throws {
        let bridgeNoAddress = Fixture.settings { $0.recoveryNetwork = .bridge("br0"); $0.checks = [.tcp(port: 22)] }
        let error = await expectCode("launch.bad-settings") {
            _ = try QEMULauncher.arguments(for: Fixture.request(mode: .recovery, settings: bridgeNoAddress), accelerator: .tcg, forwards: [:], console: console)
        }
        #expect(error?.message.contains("--recovery-address") == true)
        let tapNoAddress = Fixture.settings { $0.recoveryNetwork = .tap("tap0"); $0.checks = [.http(port: 80, path: "/", status: 200, bodyPattern: nil)] }
        await expectCode("launch.bad-settings") {
            _ = try QEMULauncher.arguments(for: Fixture.request(mode: .recovery, settings: tapNoAddress), accelerator: .tcg, forwards: [:], console: console)
        }

        var bridge = bridgeNoAddress
        bridge.recoveryAddress = "10.0.0.20"
        let bridgeArgs = try QEMULauncher.arguments(for: Fixture.request(mode: .recovery, settings: bridge), accelerator: .tcg, forwards: [:], console: console)
        #expect(values(of: "-netdev", in: bridgeArgs) == ["bridge,id=n0,br=br0"])
        #expect(values(of: "-device", in: bridgeArgs).contains("virtio-net-pci,netdev=n0"))
        #expect(!bridgeArgs.joined(separator: " ").contains("hostfwd"))

        var tap = tapNoAddress
        tap.recoveryAddress = "10.0.0.21"
        let tapArgs = try QEMULauncher.arguments(for: Fixture.request(mode: .recovery, settings: tap), accelerator: .tcg, forwards: [:], console: console)
        #expect(values(of: "-netdev", in: tapArgs) == ["tap,id=n0,ifname=tap0,script=no,downscript=no"])

        // Checks that need no port (serial, command) need no address.
        let serialOnly = Fixture.settings { $0.recoveryNetwork = .bridge("br1"); $0.checks = [.serial(pattern: "login:"), .command("true")] }
        let serialArgs = try QEMULauncher.arguments(for: Fixture.request(mode: .recovery, settings: serialOnly), accelerator: .tcg, forwards: [:], console: console)
        #expect(values(of: "-netdev", in: serialArgs) == ["bridge,id=n0,br=br1"])
    }

    @Test("RECOVERY with network none: -nic none and no netdev")
    func recoveryNone() throws {
        let settings = Fixture.settings { $0.recoveryNetwork = .none; $0.checks = [.tcp(port: 22)] }
        let args = try QEMULauncher.arguments(for: Fixture.request(mode: .recovery, settings: settings), accelerator: .tcg, forwards: [:], console: console)
        #expect(values(of: "-nic", in: args) == ["none"])
        #expect(!args.contains("-netdev"))
        #expect(!values(of: "-device", in: args).contains { $0.hasPrefix("virtio-net") })
    }

    @Test("extra QEMU arguments are appended as given, last")
    func extraArguments() throws {
        let extra = ["-device", "virtio-rng-pci", "-boot", "menu=on"]
        let settings = Fixture.settings { $0.qemuArguments = extra }
        for mode in LaunchMode.allCases {
            let args = try QEMULauncher.arguments(for: Fixture.request(mode: mode, settings: settings), accelerator: .kvm, forwards: [:], console: console)
            #expect(Array(args.suffix(4)) == extra)
            #expect(args.filter { $0 == "virtio-rng-pci" }.count == 1)
        }
        let none = Fixture.settings { $0.recoveryNetwork = .none; $0.qemuArguments = ["-snapshot"] }
        let args = try QEMULauncher.arguments(for: Fixture.request(mode: .recovery, settings: none), accelerator: .tcg, forwards: [:], console: console)
        #expect(args.last == "-snapshot")
    }

    @Test("the process marker names the instance; the network is described for the job log")
    func markerAndDescription() {
        #expect(QEMULauncher.marker(instance: "ri-1") == "lifeboat-ri-1")
        #expect(QEMULauncher.networkDescription(Fixture.request(mode: .test)) == "isolated (user, restrict=on)")
        let bridge = Fixture.settings { $0.recoveryNetwork = .bridge("br0") }
        #expect(QEMULauncher.networkDescription(Fixture.request(mode: .recovery, settings: bridge)) == "recovery (bridge:br0)")
    }

    @Test("isRunning and terminate without a pid: unknown, and nothing to stop")
    func withoutPid() async throws {
        let launcher = QEMULauncher(executable: "/nonexistent/qemu", accelerator: .tcg)
        #expect(launcher.currentAccelerator() == .tcg)
        let runtime = InstanceRuntime(launcher: "qemu")
        #expect(launcher.isRunning(runtime) == nil)
        let log = LogLines()
        try await launcher.terminate(runtime, request: Fixture.request(), log: log.sink)
        #expect(log.all.isEmpty)
    }

    @Test("a QEMU executable that does not exist: launch.spawn-failed naming it")
    func missingExecutable() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        let launcher = QEMULauncher(executable: dir.child("no-qemu-here"), accelerator: .tcg)
        let error = await expectCode("launch.spawn-failed") {
            _ = try await launcher.launch(Fixture.request(directory: dir.path), log: { _ in })
        }
        #expect(error?.message.contains(dir.child("no-qemu-here")) == true)
    }
}

// MARK: - Runtime and helpers

@Suite("Launch values and helpers")
struct LaunchValuesTests {
    @Test("InstanceRuntime: hostPort maps forwarded guest ports, others are reached as is; JSON round trip")
    func runtime() throws {
        var runtime = InstanceRuntime(launcher: "qemu")
        #expect(runtime.ports.isEmpty && runtime.disks.isEmpty && runtime.pid == nil)
        runtime.pid = 1234
        runtime.processMarker = "lifeboat-ri-1"
        runtime.consoleLog = "/x/console.log"
        runtime.host = "127.0.0.1"
        runtime.ports = [80: 40080, 22: 40022]
        runtime.accelerator = "tcg"
        runtime.launcherData = #"{"vm":"x"}"#
        runtime.disks = [Fixture.nbd("root", tls: "/tls")]
        #expect(runtime.hostPort(for: 80) == 40080)
        #expect(runtime.hostPort(for: 22) == 40022)
        #expect(runtime.hostPort(for: 443) == 443)
        let data = try JSONEncoder().encode(runtime)
        #expect(try JSONDecoder().decode(InstanceRuntime.self, from: data) == runtime)
    }

    @Test("LaunchDisk: JSON round trip, optional fields absent by default")
    func disk() throws {
        let plain = LaunchDisk(volume: "root", size: 4096)
        #expect(plain.nbdURI == nil && plain.nbdHost == nil && plain.imagePath == nil && plain.nbdTLSDirectory == nil)
        for disk in [plain, Fixture.nbd("data", port: 1, tls: "/tls")] {
            #expect(try JSONDecoder().decode(LaunchDisk.self, from: JSONEncoder().encode(disk)) == disk)
        }
    }

    @Test("readTail: the last bytes of a file; a missing file reads as nothing")
    func tail() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        let path = dir.child("qemu.log")
        let bytes = Array("line one\nline two\nqemu-system-x86_64: Could not open 'nbd://x'\n".utf8)
        try FileTools.write(path, bytes)
        #expect(try readTail(path, limit: 4096) == bytes)
        #expect(try readTail(path, limit: 10) == Array(bytes.suffix(10)))
        #expect(try readTail(dir.child("missing"), limit: 10).isEmpty)
        try FileTools.write(dir.child("empty"), [])
        #expect(try readTail(dir.child("empty"), limit: 10).isEmpty)
    }

    @Test("FreePort picks a loopback port nothing listens on")
    func freePort() throws {
        let port = try FreePort.pick()
        #expect((1...65535).contains(port))
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        let code = errno
        #expect(rc == -1 && code == ECONNREFUSED)
    }
}

// MARK: - Command launcher

@Suite("Command launcher")
struct CommandLauncherTests {
    /// An executable shell script in `dir`.
    static func script(_ dir: TemporaryDirectory, name: String = "launcher", _ body: String) throws -> String {
        let path = dir.child(name)
        try FileTools.write(path, Array(("#!/bin/sh\n" + body + "\n").utf8), mode: 0o755)
        try FileTools.chmod(path, 0o755)
        return path
    }

    static func commandSettings(_ executable: String) -> LaunchSettings {
        Fixture.settings {
            $0.launcher = .command
            $0.command = executable
            $0.checks = [.tcp(port: 22), .http(port: 80, path: "/", status: 200, bodyPattern: nil), .serial(pattern: "x")]
            $0.forwardPorts = [443]
            $0.recoveryNetwork = .bridge("br0")
            $0.vcpus = 4
            $0.memoryMiB = 4096
        }
    }

    static func object(_ data: Data) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test("describe: the documented JSON for a launch")
    func describeLaunch() throws {
        var image = LaunchDisk(volume: "data", size: 2048)
        image.imagePath = "/exports/data.raw"
        image.imageFormat = "raw"
        let request = Fixture.request(
            mode: .test, disks: [Fixture.nbd("root"), image], settings: Self.commandSettings("/opt/launch"),
            point: 0xFEDC_BA98_7654_3210, directory: "/var/lib/lifeboat/instances/ri-1"
        )
        let data = try CommandLauncher.describe(request, action: "launch", launched: nil)
        let text = String(decoding: data, as: UTF8.self)
        let json = try Self.object(data)
        #expect(json["action"] as? String == "launch")
        #expect(json["instance"] as? String == Fixture.instance)
        #expect(json["job"] as? String == "job-00000000000000aa")
        #expect(json["machine"] as? String == "web-1")
        #expect(json["mode"] as? String == "TEST")
        #expect(json["vcpus"] as? Int == 4)
        #expect(json["memoryMiB"] as? Int == 4096)
        #expect(json["directory"] as? String == "/var/lib/lifeboat/instances/ri-1")
        #expect(json["launched"] == nil)
        let point = try #require(json["point"] as? [String: Any])
        #expect(point["id"] as? String == "fedcba9876543210")
        #expect(point["captureTime"] as? String == "2026-11-30T03:25:31.000Z")
        let network = try #require(json["network"] as? [String: Any])
        #expect(network["isolated"] as? Bool == true)
        #expect(network["recoveryNetwork"] as? String == "bridge:br0")
        #expect(network["guestPorts"] as? [Int] == [22, 80, 443])
        let disks = try #require(json["disks"] as? [[String: Any]])
        #expect(disks.count == 2)
        #expect(disks[0]["volume"] as? String == "root")
        #expect(disks[0]["size"] as? Int == 1 << 30)
        #expect(disks[0]["nbdURI"] as? String == "nbd://127.0.0.1:10809/\(Fixture.instance)-root")
        #expect(disks[0]["imagePath"] is NSNull)
        #expect(disks[0]["imageFormat"] is NSNull)
        #expect(disks[1]["nbdURI"] is NSNull)
        #expect(disks[1]["imagePath"] as? String == "/exports/data.raw")
        #expect(disks[1]["imageFormat"] as? String == "raw")
        // Sorted keys, slashes as they are.
        #expect(text.hasPrefix(#"{"action":"launch","directory":"#))
        #expect(text.contains(#""directory":"/var/lib/lifeboat/instances/ri-1""#))
        #expect(!text.contains(#"\/"#))
    }

    @Test("describe: small point ids are zero-padded; RECOVERY is not isolated; terminate carries what launch answered")
    func describeTerminate() throws {
        let request = Fixture.request(mode: .recovery, settings: Self.commandSettings("/opt/launch"), point: 42)
        let launched = #"{"address":"10.0.0.5","vm":"lifeboat-42","ports":{"22":2222}}"#
        let json = try Self.object(try CommandLauncher.describe(request, action: "terminate", launched: launched))
        #expect(json["action"] as? String == "terminate")
        #expect(json["mode"] as? String == "RECOVERY")
        #expect((json["point"] as? [String: Any])?["id"] as? String == "000000000000002a")
        #expect((json["network"] as? [String: Any])?["isolated"] as? Bool == false)
        let answer = try #require(json["launched"] as? [String: Any])
        #expect(answer["address"] as? String == "10.0.0.5")
        #expect(answer["vm"] as? String == "lifeboat-42")
        #expect((answer["ports"] as? [String: Any])?["22"] as? Int == 2222)

        // What is not JSON is left out rather than passed on.
        let garbage = try Self.object(try CommandLauncher.describe(request, action: "terminate", launched: "started vm 7"))
        #expect(garbage["launched"] == nil)
    }

    @Test("launch: the executable gets the JSON on stdin; exit 0 with a JSON last line gives address, ports, console")
    func launchReadsAnswer() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        let input = dir.child("input.json")
        let answer = #"{"address":"192.0.2.10","ports":{"80":8080,"22":"2222","bad":1,"443":"x"},"console":"/var/log/vm.console","vm":"v-1"}"#
        let executable = try Self.script(dir, """
            cat > '\(input)'
            echo "creating vm"
            echo "a warning" >&2
            echo '\(answer)'
            """)
        let request = Fixture.request(settings: Self.commandSettings(executable), directory: dir.path)
        let log = LogLines()
        let runtime = try await CommandLauncher().launch(request, log: log.sink)
        #expect(runtime.launcher == "command")
        #expect(runtime.host == "192.0.2.10")
        #expect(runtime.ports == [80: 8080, 22: 2222])
        #expect(runtime.consoleLog == "/var/log/vm.console")
        #expect(runtime.launcherData == answer)
        #expect(runtime.disks == request.disks)
        #expect(runtime.pid == nil)
        #expect(CommandLauncher().isRunning(runtime) == nil)

        let sent = try Self.object(Data(try FileTools.read(input)))
        #expect(sent["action"] as? String == "launch")
        #expect(sent["instance"] as? String == Fixture.instance)
        #expect(try FileTools.read(input) == Array(try CommandLauncher.describe(request, action: "launch", launched: nil)))

        #expect(log.all == [
            "\(executable) stdout: creating vm\n\(answer)",
            "\(executable) stderr: a warning",
            "\(executable) exited 0",
        ])
    }

    @Test("launch: exit 0 without a JSON last line starts a machine the launcher says nothing about")
    func launchWithoutAnswer() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        for (index, body) in ["echo started", "echo '{\"address\":\"10.0.0.1\"}'; echo done", "true", "echo '{not json'"].enumerated() {
            let executable = try Self.script(dir, name: "launcher-\(index)", body)
            let runtime = try await CommandLauncher().launch(Fixture.request(settings: Self.commandSettings(executable)), log: { _ in })
            #expect(runtime.host == nil, "\(body)")
            #expect(runtime.ports.isEmpty)
            #expect(runtime.consoleLog == nil)
            #expect(runtime.launcherData == nil)
            #expect(runtime.disks == Fixture.request().disks)
        }
    }

    @Test("launch: the answer may be followed by blank lines")
    func answerBeforeBlankLines() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        let executable = try Self.script(dir, #"echo '{"address":"10.0.0.7"}'; echo; echo '   '"#)
        let runtime = try await CommandLauncher().launch(Fixture.request(settings: Self.commandSettings(executable)), log: { _ in })
        #expect(runtime.host == "10.0.0.7")
        #expect(runtime.launcherData == #"{"address":"10.0.0.7"}"#)
    }

    @Test("launch: exit 3 is launch.command-failed with the last line of stderr; the log has the output and the status")
    func launchFails() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        let executable = try Self.script(dir, """
            cat > /dev/null
            echo '{"address":"10.0.0.1"}'
            echo "checking quota" >&2
            echo "no capacity in zone b" >&2
            exit 3
            """)
        let log = LogLines()
        let error = await expectCode("launch.command-failed") {
            _ = try await CommandLauncher().launch(Fixture.request(settings: Self.commandSettings(executable)), log: log.sink)
        }
        #expect(error?.message == "\(executable) exited 3: no capacity in zone b")
        #expect(log.all.contains("\(executable) exited 3"))
        #expect(log.all.contains("\(executable) stderr: checking quota\nno capacity in zone b"))
        #expect(log.all.contains("\(executable) stdout: {\"address\":\"10.0.0.1\"}"))

        let quiet = try Self.script(dir, name: "quiet", "exit 1")
        let quietLog = LogLines()
        let plain = await expectCode("launch.command-failed") {
            _ = try await CommandLauncher().launch(Fixture.request(settings: Self.commandSettings(quiet)), log: quietLog.sink)
        }
        #expect(plain?.message == "\(quiet) exited 1")
        #expect(quietLog.all == ["\(quiet) exited 1"], "nothing printed, nothing logged but the status")
    }

    @Test("terminate: the executable gets action terminate with the launch answer; a failure is launch.command-failed")
    func terminate() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        let input = dir.child("terminate.json")
        let executable = try Self.script(dir, "cat > '\(input)'; echo removed")
        var runtime = InstanceRuntime(launcher: "command")
        runtime.launcherData = #"{"vm":"v-9","address":"10.0.0.9"}"#
        let request = Fixture.request(settings: Self.commandSettings(executable))
        let log = LogLines()
        try await CommandLauncher().terminate(runtime, request: request, log: log.sink)
        let sent = try Self.object(Data(try FileTools.read(input)))
        #expect(sent["action"] as? String == "terminate")
        #expect((sent["launched"] as? [String: Any])?["vm"] as? String == "v-9")
        #expect(log.all == ["\(executable) stdout: removed", "\(executable) exited 0"])

        let failing = try Self.script(dir, name: "failing", "echo 'vm is locked' >&2; exit 2")
        let error = await expectCode("launch.command-failed") {
            try await CommandLauncher().terminate(runtime, request: Fixture.request(settings: Self.commandSettings(failing)), log: { _ in })
        }
        #expect(error?.message == "\(failing) exited 2: vm is locked")
    }

    @Test("no command configured is launch.bad-settings; a missing executable is launch.spawn-failed")
    func badExecutable() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        var settings = Self.commandSettings("/x")
        settings.command = nil
        await expectCode("launch.bad-settings") {
            _ = try await CommandLauncher().launch(Fixture.request(settings: settings), log: { _ in })
        }
        let missing = dir.child("missing-launcher")
        let error = await expectCode("launch.spawn-failed") {
            _ = try await CommandLauncher().launch(Fixture.request(settings: Self.commandSettings(missing)), log: { _ in })
        }
        #expect(error?.message.contains(missing) == true)
    }

    @Test("an executable that runs past the timeout is killed: launch.command-timeout")
    func timeout() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        let executable = try Self.script(dir, "echo waiting; exec /bin/sleep 30")
        let log = LogLines()
        let error = await expectCode("launch.command-timeout") {
            _ = try await CommandLauncher(timeout: .seconds(1)).launch(Fixture.request(settings: Self.commandSettings(executable)), log: log.sink)
        }
        #expect(error?.message == "\(executable) did not finish within 1 s and was killed")
        #expect(log.all.contains("\(executable) stdout: waiting"))
        #expect(!log.all.contains { $0.contains("exited") })
    }

    @Test("a sub-second timeout still lets an executable that needs less finish")
    func subSecondTimeout() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-launch")
        // 0.2 s of work against a 0.9 s limit.
        let executable = try Self.script(dir, #"sleep 0.2; echo '{"address":"10.0.0.3"}'"#)
        let runtime = try await CommandLauncher(timeout: .milliseconds(900)).launch(
            Fixture.request(settings: Self.commandSettings(executable)), log: { _ in }
        )
        #expect(runtime.host == "10.0.0.3")
    }
}

// MARK: - Detached processes

@Suite("Detached processes")
struct DetachedProcessTests {
    /// Waits (bounded) until `pid`, our child, has exited and is reaped; returns its raw wait status.
    static func waitForExit(_ pid: Int32) -> Int32? {
        for _ in 0..<1000 {
            if let status = DetachedProcess.reap(pid) { return status }
            usleep(10_000)
        }
        return nil
    }

    /// Kills and reaps our child `pid` if it is still there (whatever its command line says).
    static func killAndReap(_ pid: Int32) {
        guard Glibc.kill(pid, 0) == 0 else { return }
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
    }

    /// Waits (bounded) until the exec of a child just spawned is complete: its command line is readable.
    static func waitForCommandLine(_ pid: Int32) -> Bool {
        for _ in 0..<1000 {
            if !readProc("/proc/\(pid)/cmdline").isEmpty { return true }
            usleep(1_000)
        }
        return false
    }

    /// The target of /proc/PID/fd/N.
    static func link(_ pid: Int32, _ fd: Int) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/\(pid)/fd/\(fd)", &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A /proc file (its size reads as 0: read to the end).
    static func readProc(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func procStatus(_ pid: Int32, _ field: String) throws -> String? {
        let text = Self.readProc("/proc/\(pid)/status")
        return text.split(separator: "\n").first { $0.hasPrefix(field + ":") }
            .map { $0.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces) }
    }

    @Test("spawn: own session, stdin /dev/null, stdout and stderr to the output file; alive by pid and marker; stop ends it")
    func spawnAndStop() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-detached")
        let output = dir.child("out.log")
        let pid = try DetachedProcess.spawn("/bin/sleep", ["30"], output: output)
        defer { Self.killAndReap(pid) }
        #expect(pid > 0)
        #expect(Self.waitForCommandLine(pid))
        #expect(DetachedProcess.isAlive(pid, marker: "/bin/sleep"))
        #expect(DetachedProcess.isAlive(pid, marker: "sleep 30"))
        #expect(!DetachedProcess.isAlive(pid, marker: "lifeboat-ri-0000000000000000"))
        #expect(getsid(pid) == pid, "a session of its own")
        #expect(getpgid(pid) == pid, "a process group of its own")
        #expect(Self.link(pid, 0) == "/dev/null")
        #expect(Self.link(pid, 1) == output)
        #expect(Self.link(pid, 2) == output)
        #expect(FileTools.exists(output))

        // stop with another marker leaves it alone.
        DetachedProcess.stop(pid, marker: "lifeboat-ri-0000000000000000", grace: 1)
        #expect(DetachedProcess.isAlive(pid, marker: "/bin/sleep"))

        DetachedProcess.stop(pid, marker: "/bin/sleep", grace: 5)
        #expect(!DetachedProcess.isAlive(pid, marker: "/bin/sleep"))
        // It ended by the SIGTERM, and is reaped by isAlive: no zombie stays. (stop() may return while the
        // process is still exiting — its command line is already empty — so give the exit a moment.)
        var gone = false
        for _ in 0..<500 {
            _ = DetachedProcess.isAlive(pid, marker: "/bin/sleep")
            let rc = Glibc.kill(pid, 0)
            let code = errno
            if rc == -1 && code == ESRCH {
                gone = true
                break
            }
            usleep(10_000)
        }
        #expect(gone, "the stopped process was reaped")
        #expect(DetachedProcess.reap(pid) == nil)
    }

    @Test("a process just spawned is alive, and stop() right after spawn ends it")
    func aliveRightAfterSpawn() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-detached")
        var notAlive = 0
        var survivedStop = 0
        for _ in 0..<50 {
            let pid = try DetachedProcess.spawn("/bin/sleep", ["30"], output: dir.child("out.log"))
            if !DetachedProcess.isAlive(pid, marker: "/bin/sleep") { notAlive += 1 }
            Self.killAndReap(pid)
        }
        for _ in 0..<10 {
            let pid = try DetachedProcess.spawn("/bin/sleep", ["30"], output: dir.child("out.log"))
            DetachedProcess.stop(pid, marker: "/bin/sleep", grace: 1)
            var status: Int32 = 0
            if Glibc.kill(pid, 0) == 0 && waitpid(pid, &status, WNOHANG) == 0 { survivedStop += 1 }
            Self.killAndReap(pid)
        }
        #expect(notAlive == 0, "isAlive said \(notAlive) of 50 processes spawned a moment before were not running")
        #expect(survivedStop == 0, "\(survivedStop) of 10 processes kept running after stop()")
    }

    @Test("the child does not inherit descriptors that are not close-on-exec")
    func noInheritedDescriptors() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-detached")
        let secret = dir.child("inherited-file")
        let fileFD = open(secret, O_RDWR | O_CREAT, 0o600)  // deliberately without O_CLOEXEC
        try #require(fileFD >= 0)
        defer { close(fileFD) }
        let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)  // deliberately without SOCK_CLOEXEC
        try #require(socketFD >= 0)
        defer { close(socketFD) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0)
        try #require(listen(socketFD, 1) == 0)
        #expect(fcntl(fileFD, F_GETFD) & FD_CLOEXEC == 0)
        #expect(fcntl(socketFD, F_GETFD) & FD_CLOEXEC == 0)

        let listing = dir.child("fds.txt")
        let output = dir.child("out.log")
        let pid = try DetachedProcess.spawn("/bin/sh", ["-c", "ls -l /proc/$$/fd > '\(listing)'; true"], output: output)
        let status = try #require(Self.waitForExit(pid), "the shell ends")
        #expect(status == 0)
        let text = String(decoding: try FileTools.read(listing), as: UTF8.self)
        #expect(text.contains("0 -> /dev/null"), "\(text)")
        #expect(!text.contains(secret), "the file descriptor leaked: \(text)")
        #expect(!text.contains("socket:"), "the listening socket leaked: \(text)")
        #expect(!text.contains(" \(fileFD) -> ") && !text.contains(" \(socketFD) -> "), "\(text)")
    }

    @Test("the environment is the one given, else ours; output is appended")
    func environmentAndAppend() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-detached")
        let output = dir.child("out.log")
        try FileTools.write(output, Array("earlier\n".utf8))
        let given = try DetachedProcess.spawn("/bin/sh", ["-c", "echo \"[$LIFEBOAT_TEST_VALUE][$HOME]\"; echo oops >&2"], output: output, environment: ["LIFEBOAT_TEST_VALUE": "given"])
        #expect(Self.waitForExit(given) == 0)
        #expect(String(decoding: try FileTools.read(output), as: UTF8.self) == "earlier\n[given][]\noops\n")

        let current = DetachedProcess.currentEnvironment()
        #expect(current["PATH"] == ProcessInfo.processInfo.environment["PATH"])
        let inherited = try DetachedProcess.spawn("/bin/sh", ["-c", "echo \"$PATH\""], output: dir.child("inherited.log"))
        #expect(Self.waitForExit(inherited) == 0)
        #expect(String(decoding: try FileTools.read(dir.child("inherited.log")), as: UTF8.self) == (current["PATH"] ?? "") + "\n")
    }

    @Test("signals: the child starts with default dispositions and nothing blocked, though we ignore SIGPIPE and block SIGUSR2")
    func signalDefaults() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-detached")
        signal(SIGPIPE, SIG_IGN)  // what the server (and ChildProcess) does
        var blockUSR2 = sigset_t()
        sigemptyset(&blockUSR2)
        sigaddset(&blockUSR2, SIGUSR2)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blockUSR2, &previous)  // this thread blocks SIGUSR2 while spawning
        let spawned = Result { try DetachedProcess.spawn("/bin/sleep", ["30"], output: dir.child("out.log")) }
        pthread_sigmask(SIG_SETMASK, &previous, nil)
        let pid = try spawned.get()
        defer { Self.killAndReap(pid) }
        #expect(Self.waitForCommandLine(pid))
        let ignoredText = try Self.procStatus(pid, "SigIgn") ?? ""
        let blockedText = try Self.procStatus(pid, "SigBlk") ?? ""
        let ignored = try #require(UInt64(ignoredText, radix: 16), "SigIgn: \(ignoredText)")
        let blocked = try #require(UInt64(blockedText, radix: 16), "SigBlk: \(blockedText)")
        // glibc itself leaves its two internal signals (32 and 33, bits 31 and 32) ignored in a spawned child.
        let glibcInternal: UInt64 = 1 << 31 | 1 << 32
        #expect(ignored & ~glibcInternal == 0, "ignored signals: \(String(ignored, radix: 16))")
        #expect(ignored & (1 << (UInt64(SIGPIPE) - 1)) == 0, "SIGPIPE is not ignored")
        #expect(blocked == 0, "blocked signals: \(String(blocked, radix: 16))")
    }

    @Test("reap returns the exit status of an exited child once; an exited process is not alive")
    func reapAndExitStatus() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-detached")
        let pid = try DetachedProcess.spawn("/bin/sh", ["-c", "exit 3"], output: dir.child("out.log"))
        let status = try #require(Self.waitForExit(pid))
        #expect((status >> 8) & 0xff == 3)
        #expect(status & 0x7f == 0, "exited, not signalled")
        #expect(DetachedProcess.reap(pid) == nil)
        #expect(!DetachedProcess.isAlive(pid, marker: "sh"))
        // Stopping what is gone does nothing and returns.
        DetachedProcess.stop(pid, marker: "sh", grace: 1)
    }

    @Test("a zombie is not alive (and isAlive reaps it)")
    func zombie() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-detached")
        let pid = try DetachedProcess.spawn("/bin/true", [], output: dir.child("out.log"))
        // Wait until it has exited (a zombie: state Z) without reaping it.
        var state: String?
        for _ in 0..<500 {
            state = try? Self.procStatus(pid, "State")
            if state?.hasPrefix("Z") == true { break }
            usleep(10_000)
        }
        #expect(state?.hasPrefix("Z") == true)
        #expect(!DetachedProcess.isAlive(pid, marker: "/bin/true"))
        let rc = kill(pid, 0)
        let code = errno
        #expect(rc == -1 && code == ESRCH, "reaped by isAlive")
    }

    @Test("spawning what does not exist is launch.spawn-failed naming it")
    func spawnFails() async throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-detached")
        let error = await expectCode("launch.spawn-failed") {
            _ = try DetachedProcess.spawn(dir.child("nope"), [], output: dir.child("out.log"))
        }
        #expect(error?.message.contains(dir.child("nope")) == true)
    }

    @Test("a process that is not ours or not running is not alive")
    func notAlive() {
        #expect(!DetachedProcess.isAlive(Int32.max, marker: "anything"))
        // PID 1 runs, but does not carry our marker.
        #expect(!DetachedProcess.isAlive(1, marker: "lifeboat-ri-0123456789abcdef"))
    }
}
