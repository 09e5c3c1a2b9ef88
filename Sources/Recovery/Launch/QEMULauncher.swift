#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import LifeboatCore
import NIOPosix
import Synchronization

/// Starts recovery machines as QEMU processes on this host: KVM when the probe finds it usable, TCG otherwise;
/// every volume attached over NBD (reconnecting, so a restarted server picks the machine up again); the serial
/// console in the instance's `console.log`.
///
/// Networks: TEST gets QEMU user networking with `restrict=on` — no route anywhere — and only the guest ports the
/// checks need forwarded to 127.0.0.1. RECOVERY gets the machine's configured recovery network: user networking
/// with outbound access (same forwards), a bridge, a tap device, or none.
public final class QEMULauncher: Launcher {
    public let kind = "qemu"
    let executable: String
    private let accelerator: Mutex<Accelerator?>
    private let probeTimeout: Duration

    /// - Parameters:
    ///   - accelerator: force one (tests); nil probes /dev/kvm on first launch.
    public init(executable: String = "/usr/bin/qemu-system-x86_64", accelerator: Accelerator? = nil, probeTimeout: Duration = .seconds(3)) {
        self.executable = executable
        self.accelerator = Mutex(accelerator)
        self.probeTimeout = probeTimeout
    }

    /// The accelerator launches use (probed once).
    public func currentAccelerator() -> Accelerator {
        if let known = accelerator.withLock({ $0 }) { return known }
        let detected = KVMProbe.detect(timeout: probeTimeout)
        accelerator.withLock { $0 = detected }
        return detected
    }

    public func launch(_ request: LaunchRequest, log: @escaping @Sendable (String) -> Void) async throws -> InstanceRuntime {
        // The first probe may take seconds: not on the cooperative pool.
        let accelerator = try await LaunchThreads.pool.runIfActive { self.currentAccelerator() }
        var ports: [Int: Int] = [:]
        let usesUserNetwork = request.mode == .test || request.settings.recoveryNetwork == .user
        if usesUserNetwork {
            for guest in request.settings.guestPorts { ports[guest] = try FreePort.pick() }
        }
        let console = request.directory + "/console.log"
        let output = request.directory + "/qemu.log"
        let marker = Self.marker(instance: request.instance)
        let arguments = try Self.arguments(for: request, accelerator: accelerator, forwards: ports, console: console)
        let pid = try DetachedProcess.spawn(executable, arguments, output: output)
        log("qemu pid \(pid), accelerator \(accelerator.qemuName), \(request.settings.vcpus) vCPU, \(request.settings.memoryMiB) MiB, network \(Self.networkDescription(request)), console \(console)")
        var runtime = InstanceRuntime(launcher: kind)
        runtime.pid = pid
        runtime.processMarker = marker
        runtime.consoleLog = console
        runtime.accelerator = accelerator.qemuName
        runtime.ports = ports
        runtime.disks = request.disks
        runtime.host = usesUserNetwork ? "127.0.0.1" : request.settings.recoveryAddress
        // QEMU fails fast on bad arguments or an unreachable disk: give it a moment and report its own words.
        // Not cancellable: a cancelled launch must still return the pid so that the caller stops the machine.
        try? await Task.sleep(for: .milliseconds(300))
        if !DetachedProcess.isAlive(pid, marker: marker) {
            let text = (try? String(decoding: readTail(output, limit: 4096), as: UTF8.self)) ?? ""
            let trimmed = text.split(whereSeparator: \.isNewline).suffix(5).joined(separator: " | ")
            throw LifeboatError("launch.qemu-exited", "QEMU exited at once: \(trimmed)")
        }
        return runtime
    }

    public func isRunning(_ runtime: InstanceRuntime) -> Bool? {
        guard let pid = runtime.pid, let marker = runtime.processMarker else { return nil }
        return DetachedProcess.isAlive(pid, marker: marker)
    }

    public func terminate(_ runtime: InstanceRuntime, request: LaunchRequest, log: @escaping @Sendable (String) -> Void) async throws {
        guard let pid = runtime.pid, let marker = runtime.processMarker else { return }
        if DetachedProcess.isAlive(pid, marker: marker) {
            try await LaunchThreads.pool.runIfActive { DetachedProcess.stop(pid, marker: marker) }
            log("qemu pid \(pid) stopped")
        } else {
            log("qemu pid \(pid) had already exited")
        }
        if DetachedProcess.isAlive(pid, marker: marker) {
            throw LifeboatError("launch.stop-failed", "QEMU pid \(pid) of \(request.instance) survived SIGKILL")
        }
    }

    static func marker(instance: String) -> String { "lifeboat-\(instance)" }

    static func networkDescription(_ request: LaunchRequest) -> String {
        request.mode == .test ? "isolated (user, restrict=on)" : "recovery (\(request.settings.recoveryNetwork))"
    }

    /// The QEMU command line (without the executable). Pure: tested without starting QEMU.
    ///
    /// - Throws: `launch.no-disks`, `launch.bad-settings` (a RECOVERY launch on a bridge or tap whose checks need
    ///   an address that is not configured).
    public static func arguments(
        for request: LaunchRequest,
        accelerator: Accelerator,
        forwards: [Int: Int],
        console: String
    ) throws -> [String] {
        guard !request.disks.isEmpty else {
            throw LifeboatError("launch.no-disks", "machine \(request.machine) has no volume at point \(request.point)")
        }
        // Paths go into QEMU option strings, where a comma separates options: refuse rather than mis-parse.
        for path in [console] + request.disks.compactMap(\.imagePath) + request.disks.compactMap(\.nbdTLSDirectory)
        where path.contains(",") {
            throw LifeboatError(
                "launch.bad-path",
                "QEMU cannot take the path \(path): it contains ','; use a data directory whose path has no commas"
            )
        }
        let settings = request.settings
        var args = [
            "-name", "\(request.machine),process=\(marker(instance: request.instance))",
            "-machine", "q35", "-accel", accelerator.qemuName,
            "-smp", "\(settings.vcpus)", "-m", "\(settings.memoryMiB)",
            "-display", "none", "-monitor", "none", "-serial", "file:\(console)",
        ]
        if accelerator == .kvm { args += ["-cpu", "host"] }
        if let tls = request.disks.compactMap(\.nbdTLSDirectory).first {
            args += ["-object", "tls-creds-x509,id=nbdtls,dir=\(tls),endpoint=client,verify-peer=on"]
        }
        for (index, disk) in request.disks.enumerated() {
            let node = "disk\(index)"
            if let host = disk.nbdHost, let port = disk.nbdPort, let export = disk.nbdExport {
                let tls = disk.nbdTLSDirectory == nil ? "" : ",tls-creds=nbdtls"
                args += [
                    "-blockdev",
                    "driver=nbd,node-name=\(node),server.type=inet,server.host=\(host),server.port=\(port),export=\(export),reconnect-delay=60\(tls)",
                ]
            } else if let image = disk.imagePath, let format = disk.imageFormat {
                args += ["-blockdev", "driver=\(format),node-name=\(node),file.driver=file,file.filename=\(image)"]
            } else {
                throw LifeboatError("launch.no-disks", "volume \(disk.volume) of \(request.machine) has neither an NBD export nor an image")
            }
            args += ["-device", "virtio-blk-pci,drive=\(node),bootindex=\(index + 1)"]
        }
        let forwardText = forwards.sorted { $0.key < $1.key }
            .map { ",hostfwd=tcp:127.0.0.1:\($0.value)-:\($0.key)" }.joined()
        switch (request.mode, settings.recoveryNetwork) {
        case (.test, _):
            args += ["-netdev", "user,id=n0,restrict=on" + forwardText, "-device", "virtio-net-pci,netdev=n0"]
        case (.recovery, .user):
            args += ["-netdev", "user,id=n0" + forwardText, "-device", "virtio-net-pci,netdev=n0"]
        case (.recovery, .bridge(let name)):
            try requireAddress(request)
            args += ["-netdev", "bridge,id=n0,br=\(name)", "-device", "virtio-net-pci,netdev=n0"]
        case (.recovery, .tap(let name)):
            try requireAddress(request)
            args += ["-netdev", "tap,id=n0,ifname=\(name),script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0"]
        case (.recovery, .none):
            args += ["-nic", "none"]
        }
        return args + settings.qemuArguments
    }

    private static func requireAddress(_ request: LaunchRequest) throws {
        if !request.settings.guestPorts.isEmpty && request.settings.recoveryAddress == nil {
            throw LifeboatError(
                "launch.bad-settings",
                "machine \(request.machine) recovers onto \(request.settings.recoveryNetwork) and its checks need its address there: set --recovery-address"
            )
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (QEMU binds it for a forward).
enum FreePort {
    static func pick() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw LifeboatError("launch.no-port", "cannot open a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw LifeboatError("launch.no-port", "cannot find a free port: \(String(cString: strerror(errno)))") }
        var bound = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: bound.sin_port))
    }
}

/// The last `limit` bytes of a file (logs for error messages).
func readTail(_ path: String, limit: Int) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    let size = lseek(fd, 0, SEEK_END)
    let start = max(0, Int(size) - limit)
    var bytes = [UInt8](repeating: 0, count: Int(size) - start)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(start)) }
    return Array(bytes.prefix(max(0, n)))
}
