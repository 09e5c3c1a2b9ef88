#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import LifeboatCore
import LifeboatSystem
import SystemPackage

// Which mounted filesystems live on a machine's volumes: the kernel's view from /proc/self/mountinfo
// (major:minor of each mount) joined with /sys/class/block (a disk's partitions, the device-mapper and md
// devices built on them, and the loop devices backed by an image file).

extension Freezer {
    /// The mount points of filesystems that live on the given volumes, sorted, one per filesystem, without
    /// pseudo filesystems and without the filesystem that holds `excludingPath` (the agent's own state).
    ///
    /// A volume is a block device (the device, its partitions and the devices stacked on them count) or an
    /// image file (the filesystems on loop devices backed by that file count).
    /// - Throws: `volume.not-found`, `volume.unsupported`, or an `io.*` error reading /proc.
    public static func mountPoints(onVolumes volumes: [String], excludingPath: String) throws -> [String] {
        var devices = Set<DeviceNumber>()
        for volume in volumes { devices.formUnion(try blockDevices(backing: volume)) }
        let mounts = try MountInfoEntry.readAll()

        let excluded = MountInfoEntry.containing(excludingPath, in: mounts)?.device
        var seen = Set<DeviceNumber>()
        var result: [String] = []
        for mount in mounts where !mount.isPseudo && mount.device != excluded {
            let device = mount.sourceDevice.flatMap { devices.contains($0) ? $0 : nil } ?? mount.device
            guard devices.contains(device), seen.insert(mount.device).inserted else { continue }
            result.append(mount.mountPoint)
        }
        return result.sorted()
    }

    /// The device numbers of every block device whose data lives on `volume`.
    static func blockDevices(backing volume: String) throws -> Set<DeviceNumber> {
        let st = try VolumeDiscovery.inspect(volume)
        var names = Set<String>()
        switch st.st_mode & S_IFMT {
        case S_IFBLK:
            let device = DeviceNumber(st.st_rdev)
            guard let name = kernelName(of: device) else { return [device] }
            collect(name, into: &names)
        case S_IFREG:
            let image = realPath(volume) ?? volume
            for loop in try SystemCalls.listDirectory("/sys/block")
            where loop.hasPrefix("loop")
                && VolumeDiscovery.readKernelValue("/sys/block/\(loop)/loop/backing_file") == image
            {
                collect(loop, into: &names)
            }
        default:
            break  // inspect lets only block devices and regular files through
        }
        var devices = Set<DeviceNumber>()
        for name in names {
            if let text = VolumeDiscovery.readKernelValue("/sys/class/block/\(name)/dev"),
                let device = DeviceNumber(text)
            {
                devices.insert(device)
            }
        }
        return devices
    }

    /// Adds `name`, its partitions and, recursively, the devices stacked on them (holders) to `names`.
    private static func collect(_ name: String, into names: inout Set<String>) {
        guard names.insert(name).inserted else { return }
        let base = "/sys/class/block/\(name)"
        for entry in (try? SystemCalls.listDirectory(base)) ?? []
        where entry.hasPrefix(name) && SystemCalls.exists("\(base)/\(entry)/partition") {
            collect(entry, into: &names)
        }
        for holder in (try? SystemCalls.listDirectory("\(base)/holders")) ?? [] {
            collect(holder, into: &names)
        }
    }

    /// The kernel's name of a block device (`sda`, `loop3p1`) from /sys/dev/block/MAJOR:MINOR.
    private static func kernelName(of device: DeviceNumber) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/sys/dev/block/\(device)", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let target = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target.split(separator: "/").last.map(String.init)
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// A block device number as the kernel writes it (`MAJOR:MINOR`).
struct DeviceNumber: Hashable, Sendable, CustomStringConvertible {
    var major: UInt32
    var minor: UInt32

    init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    /// From a `dev_t` (glibc's encoding, as `gnu_dev_major` / `gnu_dev_minor`).
    init(_ dev: dev_t) {
        let d = UInt64(dev)
        major = UInt32(truncatingIfNeeded: ((d >> 8) & 0xfff) | ((d >> 32) & ~UInt64(0xfff)))
        minor = UInt32(truncatingIfNeeded: (d & 0xff) | ((d >> 12) & ~UInt64(0xff)))
    }

    /// From `MAJOR:MINOR` (a trailing newline is fine).
    init?(_ text: String) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0.isWhitespace })
        guard parts.count == 2, let major = UInt32(parts[0]), let minor = UInt32(parts[1]) else { return nil }
        self.init(major: major, minor: minor)
    }

    var description: String { "\(major):\(minor)" }
}

/// One line of /proc/self/mountinfo (see proc(5)).
struct MountInfoEntry: Equatable, Sendable {
    var device: DeviceNumber
    var mountPoint: String
    var fsType: String
    var source: String

    /// Filesystems that hold no volume data and must never be frozen.
    static let pseudoTypes: Set<String> = [
        "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "cgroup", "cgroup2", "securityfs", "debugfs",
        "tracefs", "configfs", "fusectl", "mqueue", "hugetlbfs", "pstore", "bpf", "binfmt_misc", "autofs",
        "efivarfs", "rpc_pipefs", "nsfs", "overlay", "squashfs", "selinuxfs",
    ]

    var isPseudo: Bool { Self.pseudoTypes.contains(fsType) || fsType.hasPrefix("fuse") }

    /// The device named as the mount's source, when it is a block device node (btrfs reports an anonymous
    /// major:minor, so the source is the way to tie its mounts to a disk).
    var sourceDevice: DeviceNumber? {
        guard source.hasPrefix("/") else { return nil }
        var st = stat()
        guard stat(source, &st) == 0, (st.st_mode & S_IFMT) == S_IFBLK else { return nil }
        return DeviceNumber(st.st_rdev)
    }

    /// Parses a line: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
    init?(line: Substring) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 10, let device = DeviceNumber(String(fields[2])),
            let dash = fields[6...].firstIndex(of: "-"), dash + 2 < fields.count
        else { return nil }
        self.device = device
        mountPoint = Self.unescape(fields[4])
        fsType = String(fields[dash + 1])
        source = Self.unescape(fields[dash + 2])
    }

    /// Every mount of this process's mount namespace, in mount order.
    static func readAll(path: String = "/proc/self/mountinfo") throws -> [MountInfoEntry] {
        try VolumeDiscovery.readKernelFile(path).split(separator: "\n").compactMap { MountInfoEntry(line: $0) }
    }

    /// The mount that holds `path` (the deepest mount point above it; of several at one place, the last).
    static func containing(_ path: String, in mounts: [MountInfoEntry]) -> MountInfoEntry? {
        var existing = path
        var resolved = Freezer.realPath(existing)
        while resolved == nil, existing != "/", !existing.isEmpty {
            existing = SystemCalls.parent(of: existing)
            resolved = Freezer.realPath(existing)
        }
        let target = resolved ?? "/"
        var best: MountInfoEntry?
        for mount in mounts {
            let prefix = mount.mountPoint == "/" ? "/" : mount.mountPoint + "/"
            guard target == mount.mountPoint || target.hasPrefix(prefix) else { continue }
            if let current = best, current.mountPoint.count > mount.mountPoint.count { continue }
            best = mount
        }
        return best
    }

    /// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        let utf8 = Array(field.utf8)
        var bytes: [UInt8] = []
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), i + 3 < utf8.count,
                let value = UInt8(String(decoding: utf8[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
