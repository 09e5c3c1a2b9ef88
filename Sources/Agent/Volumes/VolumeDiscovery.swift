#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import LifeboatCore
import LifeboatSystem
import SystemPackage
#if canImport(CoreFoundation)
    // Once a file of this module imports Foundation, `stat` resolves through CoreFoundation.
    import CoreFoundation
#endif

/// A volume the agent can replicate: a whole disk or a disk image file.
public struct DiscoveredVolume: Hashable, Sendable {
    /// The kernel's name (`sda`, `nvme0n1`, `dm-0`) or, for an image file, its file name.
    public var name: String
    /// The path the agent reads (`/dev/sda`, `/var/lib/images/web.img`).
    public var path: String
    /// The size in bytes.
    public var size: Int64

    public init(name: String, path: String, size: Int64) {
        self.name = name
        self.path = path
        self.size = size
    }
}

/// Finds the volumes of the machine the agent runs on, and checks the ones a user names.
public enum VolumeDiscovery {
    /// Kernel name prefixes of block devices that are never a machine's own disks.
    static let skippedPrefixes = ["loop", "ram", "zram", "sr", "nbd"]

    /// Every local, non-removable disk with a size (default volumes when no `--volume` is given), by name.
    ///
    /// Loop, RAM, zram, optical and NBD devices are skipped, and so are removable (`removable` = 1) and
    /// empty (`size` = 0) ones; md and device-mapper devices count.
    /// - Parameter sysBlock: the directory listing block devices (`/sys/block`; tests pass a fake tree).
    /// - Throws: an `io.*` error when `sysBlock` cannot be listed.
    public static func localDisks(sysBlock: String = "/sys/block") throws -> [DiscoveredVolume] {
        var disks: [DiscoveredVolume] = []
        for name in try SystemCalls.listDirectory(sysBlock).sorted()
        where !skippedPrefixes.contains(where: { name.hasPrefix($0) }) {
            let base = sysBlock + "/" + name
            if readKernelValue(base + "/removable") == "1" { continue }
            guard let sectors = readKernelValue(base + "/size").flatMap({ Int64($0) }), sectors > 0 else { continue }
            // sysfs writes a `/` in a device name as `!` (cciss!c0d0 is /dev/cciss/c0d0).
            let node = String(name.map { $0 == "!" ? "/" : $0 })
            disks.append(DiscoveredVolume(name: name, path: "/dev/" + node, size: sectors * 512))
        }
        return disks
    }

    /// The name and size of a volume a user named with `--volume`: a block device or a regular file.
    /// - Throws: `volume.not-found` when nothing is at `path`; `volume.unsupported` for a directory, a
    ///   character device or anything else; an `io.*` error when the volume cannot be opened.
    public static func describe(path: String) throws -> DiscoveredVolume {
        _ = try inspect(path)
        let fd = try SystemCalls.wrap("opening volume", path: path) {
            try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        }
        defer { try? fd.close() }
        let size = try SystemCalls.size(of: fd, path: path)
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return DiscoveredVolume(name: name, path: path, size: size)
    }

    /// stat(2) of a volume path, rejecting what cannot be a volume.
    static func inspect(_ path: String) throws -> stat {
        var st = stat()
        guard stat(path, &st) == 0 else {
            let errno = Errno(rawValue: Glibc.errno)
            if errno == .noSuchFileOrDirectory || errno == .notDirectory {
                throw LifeboatError(
                    "volume.not-found",
                    "volume \(path) does not exist: give the path of a block device (/dev/sdb) or of a disk image file",
                    cause: errno
                )
            }
            throw SystemCalls.error(errno, "inspecting volume", path: path)
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFBLK || type == S_IFREG else {
            let what = type == S_IFDIR ? "a directory" : type == S_IFCHR ? "a character device" : "not a disk"
            throw LifeboatError(
                "volume.unsupported",
                "volume \(path) is \(what): give a block device (/dev/sdb) or a disk image file"
            )
        }
        return st
    }

    /// A whole file of /proc or /sys (whose sizes stat does not tell), read to its end.
    static func readKernelFile(_ path: String) throws -> String {
        let fd = try SystemCalls.wrap("opening", path: path) {
            try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        }
        defer { try? fd.close() }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = try chunk.withUnsafeMutableBytes { buffer in
                try SystemCalls.wrap("reading", path: path) { try fd.read(into: buffer, retryOnInterrupt: true) }
            }
            if n == 0 { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A one-value sysfs attribute without surrounding white space; nil when it cannot be read.
    static func readKernelValue(_ path: String) -> String? {
        guard let text = try? readKernelFile(path) else { return nil }
        var value = Substring(text)
        while let last = value.last, last.isWhitespace { value.removeLast() }
        while let first = value.first, first.isWhitespace { value.removeFirst() }
        return String(value)
    }
}
