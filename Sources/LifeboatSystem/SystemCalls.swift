#if canImport(Glibc)
@preconcurrency public import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import CLinuxShims
public import LifeboatCore
public import SystemPackage

/// One place that turns errno from a system call into an error a person can act on, and the few file
/// operations the engine and the agent need (durable writes, positional I/O, block-device sizes, locks).
public enum SystemCalls {
    public static func error(_ errno: Errno, _ operation: String, path: String, location: SourceLocation = .here())
        -> LifeboatError
    {
        switch errno {
        case .noSpace:
            return LifeboatError(
                "io.no-space",
                "no space left on the device while \(operation) \(path): free space on that filesystem or move the data to a larger one",
                cause: errno,
                location: location
            )
        case .noSuchFileOrDirectory:
            return LifeboatError("io.not-found", "\(path) does not exist", cause: errno, location: location)
        case .permissionDenied, .notPermitted:
            return LifeboatError(
                "io.permission",
                "permission denied while \(operation) \(path): run as a user that may access it",
                cause: errno,
                location: location
            )
        case .readOnlyFileSystem:
            return LifeboatError("io.read-only", "\(path) is on a read-only filesystem", cause: errno, location: location)
        default:
            return LifeboatError("io.failed", "\(operation) \(path) failed: \(errno)", cause: errno, location: location)
        }
    }

    public static func wrap<T>(_ operation: String, path: String, location: SourceLocation = .here(), _ body: () throws -> T)
        throws -> T
    {
        do {
            return try body()
        } catch let e as Errno {
            throw error(e, operation, path: path, location: location)
        } catch let e as LifeboatError {
            throw e
        } catch {
            throw LifeboatError("io.failed", "\(operation) \(path) failed: \(error)", cause: error, location: location)
        }
    }

    /// fsync(2): data and metadata of the file reach stable storage.
    public static func fsync(_ fd: FileDescriptor, path: String) throws {
        while true {
            if Glibc.fsync(fd.rawValue) == 0 { return }
            let e = Errno(rawValue: Glibc.errno)
            if e == .interrupted { continue }
            throw error(e, "syncing", path: path)
        }
    }

    /// fsync of a directory, so that names created or removed in it survive a crash.
    public static func fsyncDirectory(_ path: String) throws {
        let fd = try wrap("opening directory", path: path) {
            try FileDescriptor.open(FilePath(path), .readOnly, options: [.directory])
        }
        defer { try? fd.close() }
        try fsync(fd, path: path)
    }

    /// Size of a regular file, or of a block device (BLKGETSIZE64).
    public static func size(of fd: FileDescriptor, path: String) throws -> Int64 {
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else {
            throw error(Errno(rawValue: Glibc.errno), "inspecting", path: path)
        }
        if (st.st_mode & S_IFMT) == S_IFBLK {
            var bytes: UInt64 = 0
            // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
            let blkGetSize64: UInt = 0x8008_1272
            guard ioctl(fd.rawValue, blkGetSize64, &bytes) == 0 else {
                throw error(Errno(rawValue: Glibc.errno), "reading the size of block device", path: path)
            }
            return Int64(bytes)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw LifeboatError("io.not-a-volume", "\(path) is neither a regular file nor a block device")
        }
        return Int64(st.st_size)
    }

    /// Reads exactly `buffer.count` bytes at `offset`, or fewer only at end of file.
    public static func preadFully(
        _ fd: FileDescriptor,
        into buffer: UnsafeMutableRawBufferPointer,
        at offset: Int64,
        path: String
    ) throws -> Int {
        var done = 0
        while done < buffer.count {
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            let n = try wrap("reading", path: path) {
                try fd.read(fromAbsoluteOffset: offset + Int64(done), into: slice, retryOnInterrupt: true)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public static func pwriteFully(
        _ fd: FileDescriptor,
        _ bytes: UnsafeRawBufferPointer,
        at offset: Int64,
        path: String
    ) throws {
        _ = try wrap("writing", path: path) {
            try fd.writeAll(toAbsoluteOffset: offset, bytes)
        }
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    public static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws {
        if mkdir(path, mode) != 0 {
            let e = Errno(rawValue: Glibc.errno)
            if e == .fileExists, isDirectory(path) { return }
            throw error(e, "creating directory", path: path)
        }
    }

    public static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            let e = Errno(rawValue: Glibc.errno)
            if e == .noSuchFileOrDirectory { return [] }
            throw error(e, "listing", path: path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public static func unlink(_ path: String) throws {
        if Glibc.unlink(path) != 0 {
            let e = Errno(rawValue: Glibc.errno)
            if e == .noSuchFileOrDirectory { return }
            throw error(e, "removing", path: path)
        }
    }

    public static func rename(_ from: String, _ to: String) throws {
        if Glibc.rename(from, to) != 0 {
            throw error(Errno(rawValue: Glibc.errno), "renaming \(from) to", path: to)
        }
    }

    /// Reads a whole small file.
    public static func readFile(_ path: String) throws -> [UInt8] {
        let fd = try wrap("opening", path: path) { try FileDescriptor.open(FilePath(path), .readOnly) }
        defer { try? fd.close() }
        let size = try Self.size(of: fd, path: path)
        var bytes = [UInt8](repeating: 0, count: Int(size))
        let n = try bytes.withUnsafeMutableBytes { (buf) throws -> Int in
            try preadFully(fd, into: buf, at: 0, path: path)
        }
        if n < bytes.count { bytes.removeLast(bytes.count - n) }
        return bytes
    }

    /// Writes a small file atomically and durably: temp file, fsync, rename, fsync of the directory.
    public static func writeFileAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws {
        let tmp = path + ".tmp-\(getpid())"
        let fd = try wrap("creating", path: tmp) {
            try FileDescriptor.open(
                FilePath(tmp),
                .writeOnly,
                options: [.create, .truncate],
                permissions: FilePermissions(rawValue: CModeT(mode))
            )
        }
        do {
            try bytes.withUnsafeBytes { (buf) throws in try pwriteFully(fd, buf, at: 0, path: tmp) }
            try fsync(fd, path: tmp)
            try? fd.close()
            try rename(tmp, path)
            try fsyncDirectory(parent(of: path))
        } catch {
            try? fd.close()
            try? unlink(tmp)
            throw error
        }
    }

    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func randomBytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var generator = SystemRandomNumberGenerator()
        for i in 0..<count { bytes[i] = UInt8.random(in: 0...255, using: &generator) }
        return bytes
    }
}

extension SystemCalls {
    /// For the long-running data movers (agent, replication server), which allocate and free buffers of up to a
    /// few MiB at a high rate: glibc would map each of them fresh (its threshold starts at 128 KiB) and trim freed
    /// heap tops at 128 KiB, so every buffer costs page faults and zeroing by the kernel — measured here as a
    /// third of the agent's system time in an initial sync. Buffers below 16 MiB come from the heap, and up to
    /// 64 MiB of free heap top is kept. Returns false when glibc refused (nothing else changes).
    @discardableResult
    public static func tuneAllocatorForBuffers() -> Bool {
        lifeboat_set_malloc_thresholds(16 << 20, 64 << 20) == 1
    }
}
