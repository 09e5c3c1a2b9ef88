import LifeboatCore

#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Musl)
    @preconcurrency import Musl
#endif

/// The checks made on the catalog's file before SQLite sees it, so that a wrong path, a missing directory or a
/// file that is not a database gives one clear `catalog.open` error and is never modified.
enum CatalogFile {
    /// The 16 bytes every SQLite 3 database file starts with.
    static let sqliteHeader: [UInt8] = Array("SQLite format 3".utf8) + [0]

    /// Creates the file with mode 0600 if it is missing (an empty file is an empty SQLite database), or checks
    /// that the existing file is readable and starts like an SQLite database. Returns whether it was created.
    @discardableResult
    static func prepare(path: String) throws -> Bool {
        guard !path.isEmpty else {
            throw LifeboatError("catalog.open", "the catalog path is empty: give the path of the catalog file")
        }
        var st = stat()
        if stat(path, &st) != 0 {
            let code = errno
            guard code == ENOENT else { throw failure(code, "inspecting", path) }
            return try create(path)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw LifeboatError(
                "catalog.open",
                "\(path) is a directory, but the catalog is a file: give a file path such as \(path)/catalog.sqlite"
            )
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw LifeboatError("catalog.open", "\(path) is not a regular file, so it cannot be the catalog")
        }
        let header = try readHeader(path)
        if !header.isEmpty && header != sqliteHeader {
            throw notADatabase(path)
        }
        return false
    }

    /// The error for a file that is not (or no longer) an SQLite database.
    static func notADatabase(_ path: String, cause: (any Error)? = nil) -> LifeboatError {
        LifeboatError(
            "catalog.open",
            "\(path) is not a readable Lifeboat catalog (not an SQLite database, or damaged); it was left untouched: "
                + "restore it from a backup, or move it away to start an empty catalog (every machine must then enroll again)",
            cause: cause
        )
    }

    private static func create(_ path: String) throws -> Bool {
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 {
            let code = errno
            if code == EEXIST { return try prepare(path: path) }  // Another process created it meanwhile.
            if code == ENOENT {
                throw LifeboatError(
                    "catalog.open",
                    "cannot create the catalog \(path): the directory \(directory(of: path)) does not exist; create it first"
                )
            }
            throw failure(code, "creating", path)
        }
        close(fd)
        return true
    }

    /// Up to 16 bytes from the start of the file.
    private static func readHeader(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(errno, "reading", path) }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: sqliteHeader.count)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure(errno, "reading", path)
            }
            if n == 0 { break }
            done += n
        }
        return Array(bytes[0..<done])
    }

    private static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private static func failure(_ code: Int32, _ operation: String, _ path: String) -> LifeboatError {
        let text = String(cString: strerror(code))
        switch code {
        case EACCES, EPERM:
            return LifeboatError(
                "catalog.open",
                "permission denied while \(operation) the catalog \(path): run lifeboat as the user that owns it"
            )
        default:
            return LifeboatError("catalog.open", "\(operation) the catalog \(path) failed: \(text) (errno \(code))")
        }
    }
}
