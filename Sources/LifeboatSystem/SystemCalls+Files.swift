#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
public import LifeboatCore
public import SystemPackage

extension SystemCalls {
    public static func lastError(_ operation: String, path: String, location: SourceLocation = .here()) -> LifeboatError {
        error(Errno(rawValue: Glibc.errno), operation, path: path, location: location)
    }

    public static func open(
        _ path: String,
        _ mode: FileDescriptor.AccessMode,
        options: FileDescriptor.OpenOptions = []
    )
        throws -> FileDescriptor
    {
        try wrap("opening", path: path) {
            try FileDescriptor.open(
                FilePath(path),
                mode,
                options: options.union(.closeOnExec),
                permissions: options.contains(.create) ? [.ownerReadWrite] : nil
            )
        }
    }

    /// Size of a regular file (state files).
    public static func fileSize(of fd: FileDescriptor, path: String) throws -> Int64 {
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else { throw lastError("inspecting", path: path) }
        return Int64(st.st_size)
    }

    /// Replaces `path` atomically and durably: `write` fills a temporary file, which is fsynced and renamed over
    /// `path`, then the directory is fsynced. On failure `path` is unchanged and the temporary file removed.
    public static func replaceAtomically(_ path: String, _ write: (FileDescriptor, String) throws -> Void) throws {
        let tmp = path + ".tmp"
        let fd = try open(tmp, .writeOnly, options: [.create, .truncate])
        do {
            try write(fd, tmp)
            try fsync(fd, path: tmp)
            try wrap("closing", path: tmp) { try fd.close() }
        } catch {
            try? fd.close()
            try? unlink(tmp)
            throw error
        }
        if Glibc.rename(tmp, path) != 0 {
            let failure = lastError("renaming \(tmp) to", path: path)
            try? unlink(tmp)
            throw failure
        }
        try fsyncDirectory(parent(of: path))
    }

    /// Takes an exclusive advisory lock (flock) on `path`, created if needed; the lock lasts while `fd` is open.
    public static func lockExclusively(_ path: String, what: String) throws -> FileDescriptor {
        let fd = try open(path, .readWrite, options: [.create])
        while flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
            let e = Errno(rawValue: Glibc.errno)
            if e == .interrupted { continue }
            try? fd.close()
            if e == .wouldBlock {
                throw LifeboatError(
                    "tracker.locked",
                    "\(what) is in use by another tracker (\(path) is locked): run one agent per volume"
                )
            }
            throw error(e, "locking", path: path)
        }
        return fd
    }
}

extension SystemCalls {
    /// Removes a file, or a directory with everything under it (symbolic links are removed, not followed).
    /// A missing path is not an error.
    public static func removeTree(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw lastError("inspecting", path: path)
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            for entry in try listDirectory(path) { try removeTree(path + "/" + entry) }
            guard rmdir(path) == 0 || errno == ENOENT else { throw lastError("removing directory", path: path) }
        } else {
            try unlink(path)
        }
    }
}
