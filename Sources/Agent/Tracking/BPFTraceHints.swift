public import ChangeTracking
import Foundation
import LifeboatCore
import LifeboatSystem
public import Logging

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// Write hints for one block device from the kernel's block layer: a bpftrace program on the
/// `block:block_rq_complete` tracepoint records every completed request that is not a read (writes, discards,
/// write-zeroes; a superset is harmless) into one of two BPF maps, and `drain()` swaps the maps and collects the
/// one that filled up. It makes `ScanTracker` read only what was written instead of the whole volume, which is
/// what makes a capture under FIFREEZE take milliseconds.
///
/// The swap is triggered by a system call only this instance makes (`getpgid` of a number that is no process:
/// it fails with ESRCH and changes nothing); the program flips the map generation, prints the old map, clears it
/// and prints `END <n>`. Every write that completed before the trigger is in that print: FIFREEZE returns only
/// after the filesystem's writes completed, so a drain under freeze sees all of them.
///
/// Whenever completeness cannot be vouched for — bpftrace exited, reported lost events, the map may have
/// overflowed, or the answer did not come within `timeout` — `drain()` returns nil and the tracker scans the
/// whole volume.
public final class BPFTraceHints: ChangeHints, @unchecked Sendable {
    public let devicePath: String
    /// The kernel's device number of the whole disk (`major << 20 | minor`) as the tracepoint reports it.
    let kernelDevice: UInt64
    /// Where the device starts on that disk (partitions), and its size, in 512-byte sectors.
    let startSector: UInt64
    let sectorCount: UInt64
    let magic: Int32
    let mapKeysMax = 1 << 20
    let timeout: Duration
    private let logger: Logger
    private let process: Process
    private let lock = NSCondition()
    private var attached = false
    private var exited = false
    private var lostEvents = false
    private var batch: [ChangedExtent] = []
    private var batchEntries = 0
    private var finished: [Int: (extents: [ChangedExtent], entries: Int)] = [:]
    private var triggered = 0

    /// Whether bpftrace is installed and this process may use it (root).
    public static var isAvailable: Bool {
        geteuid() == 0 && FileManager.default.isExecutableFile(atPath: bpftracePath)
    }

    static let bpftracePath = "/usr/bin/bpftrace"

    /// Starts tracing `devicePath` (a block device: a whole disk, a partition or a loop device); returns once the
    /// probes are attached. Throws `tracker.hints-unavailable` with the reason otherwise.
    public init(devicePath: String, logger: Logger, timeout: Duration = .seconds(2)) throws {
        self.devicePath = devicePath
        self.logger = logger
        self.timeout = timeout
        (kernelDevice, startSector, sectorCount) = try Self.locate(devicePath)
        magic = Int32(1_000_000_000 + Int.random(in: 0..<100_000_000))
        try Self.mountTracefs()

        let program = """
            tracepoint:block:block_rq_complete
            /args->dev == \(kernelDevice) && args->nr_sector > 0 && strncmp(args->rwbs, "R", 1) != 0/
            {
              if (@gen == 0) { @a[args->sector, args->nr_sector] = 1; } else { @b[args->sector, args->nr_sector] = 1; }
            }
            tracepoint:syscalls:sys_enter_getpgid
            /args->pid == \(magic)/
            {
              @seq = @seq + 1;
              if (@gen == 0) { @gen = 1; print(@a); clear(@a); } else { @gen = 0; print(@b); clear(@b); }
              printf("END %d\\n", @seq);
            }
            """
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.bpftracePath)
        process.arguments = ["-B", "line", "-e", program]
        var environment = ProcessInfo.processInfo.environment
        environment["BPFTRACE_MAP_KEYS_MAX"] = String(mapKeysMax)
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            throw LifeboatError("tracker.hints-unavailable", "cannot start bpftrace for \(devicePath)", cause: error)
        }
        let handle = output.fileHandleForReading
        let reader = Thread { [weak self] in self?.read(handle) }
        reader.name = "bpftrace-\(devicePath)"
        reader.start()

        lock.lock()
        let deadline = Date().addingTimeInterval(30)
        while !attached && !exited && lock.wait(until: deadline) {}
        lock.unlock()
        // "Attaching" is printed before the probes are live: trigger until an answer arrives, then count from
        // bpftrace's own sequence number. What that first batch holds is discarded; the first drain starts here.
        var synchronized = false
        while !synchronized && Date() < deadline {
            _ = getpgid(magic)
            lock.lock()
            let wait = Date().addingTimeInterval(0.2)
            while finished.isEmpty && !exited && lock.wait(until: wait) {}
            if let highest = finished.keys.max() {
                triggered = highest
                finished.removeAll()
                synchronized = true
            }
            let gone = exited
            lock.unlock()
            if gone { break }
        }
        guard synchronized else {
            stop()
            throw LifeboatError(
                "tracker.hints-unavailable",
                "bpftrace did not attach to block:block_rq_complete for \(devicePath) (is tracefs available?)"
            )
        }
        logger.info("kernel write hints active", metadata: ["device": "\(devicePath)"])
    }

    deinit { stop() }

    /// Stops bpftrace (SIGKILL: a child of a service may inherit a blocked SIGTERM; the kernel detaches the
    /// probes when the process is gone).
    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    public func drain() throws -> [ChangedExtent]? {
        lock.lock()
        guard !exited else {
            lock.unlock()
            return nil
        }
        triggered += 1
        let target = triggered
        lock.unlock()

        _ = getpgid(magic)  // the trigger: fails with ESRCH

        lock.lock()
        defer { lock.unlock() }
        let (seconds, attoseconds) = timeout.components
        let deadline = Date().addingTimeInterval(Double(seconds) + Double(attoseconds) / 1e18)
        while finished[target] == nil && !exited && lock.wait(until: deadline) {}
        // Late answers to earlier, timed-out triggers are of no use any more.
        for stale in finished.keys where stale < target { finished[stale] = nil }
        guard let result = finished.removeValue(forKey: target) else {
            logger.warning("kernel write hints did not answer; scanning the whole volume", metadata: ["device": "\(devicePath)"])
            return nil
        }
        if lostEvents {
            lostEvents = false
            logger.warning("kernel write hints lost events; scanning the whole volume", metadata: ["device": "\(devicePath)"])
            return nil
        }
        guard result.entries < mapKeysMax else {
            logger.warning("kernel write hints overflowed; scanning the whole volume", metadata: ["device": "\(devicePath)"])
            return nil
        }
        return result.extents
    }

    // MARK: - Output

    private func read(_ handle: FileHandle) {
        var pending = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...newline)
                consume(line: line)
            }
        }
        lock.lock()
        exited = true
        lock.broadcast()
        lock.unlock()
    }

    private func consume(line: String) {
        lock.lock()
        defer { lock.unlock() }
        if line.hasPrefix("@a[") || line.hasPrefix("@b[") {
            // @a[SECTOR, COUNT]: 1
            guard let close = line.firstIndex(of: "]") else { return }
            let fields = line[line.index(line.startIndex, offsetBy: 3)..<close].split(separator: ",")
            guard fields.count == 2, let sector = UInt64(fields[0].trimmingCharacters(in: .whitespaces)),
                let count = UInt64(fields[1].trimmingCharacters(in: .whitespaces))
            else {
                lostEvents = true  // an unreadable line: do not trust this batch
                return
            }
            batchEntries += 1
            let end = sector + count
            guard end > startSector, sector < startSector + sectorCount else { return }
            let first = max(sector, startSector) - startSector
            let last = min(end, startSector + sectorCount) - startSector
            batch.append(ChangedExtent(offset: Int64(first * 512), length: Int64((last - first) * 512)))
        } else if line.hasPrefix("END ") {
            if let n = Int(line.dropFirst(4)) {
                finished[n] = (batch, batchEntries)
            }
            batch = []
            batchEntries = 0
            lock.broadcast()
        } else if line.hasPrefix("Attaching") {
            attached = true
            lock.broadcast()
        } else if line.contains("Lost") && line.contains("events") {
            lostEvents = true
        } else if !line.isEmpty && !line.contains("RLIMIT_MEMLOCK") {
            logger.debug("bpftrace: \(line)")
        }
    }

    // MARK: - Devices

    /// The whole disk's kernel device number, and the device's first sector and sector count on it.
    static func locate(_ path: String) throws -> (device: UInt64, start: UInt64, sectors: UInt64) {
        let type = (try? FileManager.default.attributesOfItem(atPath: path))?[.type] as? FileAttributeType
        guard type == .typeBlockSpecial else {
            throw LifeboatError("tracker.hints-unavailable", "\(path) is not a block device: kernel write hints need one")
        }
        let name = URL(fileURLWithPath: path).resolvingSymlinksInPath().lastPathComponent
        let numbers = try text("/sys/class/block/\(name)/dev").split(separator: ":")
        guard numbers.count == 2, let major = UInt64(numbers[0]), let minor = UInt64(numbers[1]) else {
            throw LifeboatError("tracker.hints-unavailable", "cannot find the device number of \(path)")
        }
        let sys = "/sys/dev/block/\(major):\(minor)"
        let sectors = UInt64(try text(sys + "/size")) ?? 0
        if FileManager.default.fileExists(atPath: sys + "/partition") {
            let start = UInt64(try text(sys + "/start")) ?? 0
            let parentDev = try text(sys + "/../dev").split(separator: ":")
            guard parentDev.count == 2, let pMajor = UInt64(parentDev[0]), let pMinor = UInt64(parentDev[1]) else {
                throw LifeboatError("tracker.hints-unavailable", "cannot find the disk that holds partition \(path)")
            }
            return (pMajor << 20 | pMinor, start, sectors)
        }
        return (major << 20 | minor, 0, sectors)
    }

    private static func text(_ path: String) throws -> String {
        String(decoding: try SystemCalls.readFile(path), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// bpftrace needs tracefs at /sys/kernel/tracing; mount it if the system did not.
    static func mountTracefs() throws {
        if FileManager.default.fileExists(atPath: "/sys/kernel/tracing/events/block") { return }
        guard mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, nil) == 0 || errno == EBUSY else {
            throw LifeboatError("tracker.hints-unavailable", "tracefs is not mounted at /sys/kernel/tracing and cannot be")
        }
    }
}
