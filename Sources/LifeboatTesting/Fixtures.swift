#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import LifeboatCore

// Fixtures shared by tests and benchmarks: temporary directories, deterministic data and images, and small
// file-level tools (flip a byte, truncate, sum a directory) for damaging and measuring stores.
// Everything here fails loudly with a `LifeboatError` naming the path, so a broken fixture is obvious.

// MARK: - Deterministic randomness

/// A seeded, fast, deterministic generator (SplitMix64): the same seed gives the same bytes everywhere.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` random bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        fill(&out[...])
        return out
    }

    /// Overwrites a slice with random bytes.
    public mutating func fill(_ slice: inout ArraySlice<UInt8>) {
        var i = slice.startIndex
        while i < slice.endIndex {
            var word = next()
            let n = min(8, slice.endIndex - i)
            for j in 0..<n {
                slice[i + j] = UInt8(truncatingIfNeeded: word)
                word >>= 8
            }
            i += n
        }
    }

    /// A uniformly random integer in `0..<bound`.
    public mutating func below(_ bound: Int) -> Int { Int.random(in: 0..<bound, using: &self) }
}

// MARK: - Test images

/// Builds deterministic disk-image contents in memory.
public enum TestImage {
    /// The kinds of 64 KiB run `mixed` produces.
    public enum Run: Sendable, CaseIterable { case zero, text, random }

    /// An image of `size` bytes made of 64 KiB runs that cycle zero / compressible text / random in a
    /// seeded order, so every image has holes, compressible data and incompressible data.
    public static func mixed(size: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededRandom(seed: seed)
        var bytes = [UInt8](repeating: 0, count: size)
        let run = 64 << 10
        var offset = 0
        var index = 0
        while offset < size {
            let end = min(offset + run, size)
            // Guarantee each kind appears early, then pick at random.
            let kind = index < 3 ? Run.allCases[index] : Run.allCases[rng.below(3)]
            switch kind {
            case .zero:
                break
            case .text:
                fillText(&bytes[offset..<end], rng: &rng)
            case .random:
                rng.fill(&bytes[offset..<end])
            }
            offset = end
            index += 1
        }
        return bytes
    }

    /// Fills a slice with log-like text: compressible, but not a single repeated pattern.
    public static func fillText(_ slice: inout ArraySlice<UInt8>, rng: inout SeededRandom) {
        let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
        var i = slice.startIndex
        while i < slice.endIndex {
            let line = Array("2026-11-30T03:25:\(rng.below(60)) INFO \(words[rng.below(words.count)]) id=\(rng.below(100_000))\n".utf8)
            for b in line where i < slice.endIndex {
                slice[i] = b
                i += 1
            }
        }
    }

    /// An image that is `pattern` repeated (the last copy cut at `size`).
    public static func repeating(_ pattern: [UInt8], size: Int) -> [UInt8] {
        precondition(!pattern.isEmpty)
        var bytes = [UInt8](repeating: 0, count: size)
        for i in 0..<size { bytes[i] = pattern[i % pattern.count] }
        return bytes
    }
}

// MARK: - Temporary directories

/// A fresh directory under /tmp, removed (with everything in it) by `remove()` or on deinit.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String
    private var removed = false

    public init(prefix: String = "lifeboat-test") throws {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buf -> Bool in mkdtemp(buf.baseAddress!) != nil }
        guard made else {
            throw LifeboatError("test.tmpdir", "cannot create a temporary directory: errno \(errno)")
        }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// A path inside the directory (not created).
    public func child(_ name: String) -> String { path + "/" + name }

    public func remove() {
        guard !removed else { return }
        removed = true
        try? FileTools.removeTree(path)
    }

    deinit { remove() }
}

// MARK: - File tools

public enum FileTools {
    static func failure(_ what: String, _ path: String) -> LifeboatError {
        let code = errno
        let text = String(cString: strerror(code))
        return LifeboatError("test.io", "\(what) \(path) failed: \(text) (errno \(code))")
    }

    static func openFD(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw failure("opening", path) }
        return fd
    }

    /// Writes a whole file (created or truncated).
    public static func write(_ path: String, _ bytes: [UInt8], mode: UInt32 = 0o644) throws {
        let fd = try openFD(path, O_WRONLY | O_CREAT | O_TRUNC, mode: mode_t(mode))
        defer { Glibc.close(fd) }
        try writeAll(fd, bytes, at: 0, path: path)
    }

    /// Overwrites `bytes.count` bytes at `offset` (the file grows if needed).
    public static func write(_ path: String, _ bytes: [UInt8], at offset: Int64) throws {
        let fd = try openFD(path, O_WRONLY)
        defer { Glibc.close(fd) }
        try writeAll(fd, bytes, at: offset, path: path)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int64, path: String) throws {
        try bytes.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count {
                let n = pwrite(fd, buf.baseAddress! + done, buf.count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("writing", path)
                }
                done += n
            }
        }
    }

    /// Reads a whole file.
    public static func read(_ path: String) throws -> [UInt8] {
        let size = try self.size(path)
        return try read(path, at: 0, count: Int(size))
    }

    /// Reads up to `count` bytes at `offset`.
    public static func read(_ path: String, at offset: Int64, count: Int) throws -> [UInt8] {
        let fd = try openFD(path, O_RDONLY)
        defer { Glibc.close(fd) }
        var out = [UInt8](repeating: 0, count: count)
        let got = try out.withUnsafeMutableBytes { buf -> Int in
            var done = 0
            while done < buf.count {
                let n = pread(fd, buf.baseAddress! + done, buf.count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("reading", path)
                }
                if n == 0 { break }
                done += n
            }
            return done
        }
        if got < count { out.removeLast(count - got) }
        return out
    }

    public static func size(_ path: String) throws -> Int64 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw failure("inspecting", path) }
        return Int64(st.st_size)
    }

    /// Bytes actually allocated on disk (to check that sparse files stay sparse).
    public static func allocatedBytes(_ path: String) throws -> Int64 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw failure("inspecting", path) }
        return Int64(st.st_blocks) * 512
    }

    /// The permission bits of a file.
    public static func mode(_ path: String) throws -> UInt32 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw failure("inspecting", path) }
        return UInt32(st.st_mode & 0o7777)
    }

    public static func chmod(_ path: String, _ mode: UInt32) throws {
        guard Glibc.chmod(path, mode_t(mode)) == 0 else { throw failure("chmod", path) }
    }

    /// Sets a file's size with ftruncate: growing makes a sparse hole, shrinking cuts the end.
    public static func truncate(_ path: String, to size: Int64) throws {
        let fd = try openFD(path, O_WRONLY)
        defer { Glibc.close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw failure("truncating", path) }
    }

    /// Inverts every bit of the byte at `offset`; returns the byte's old value.
    @discardableResult
    public static func flipByte(_ path: String, at offset: Int64) throws -> UInt8 {
        let old = try read(path, at: offset, count: 1)
        guard old.count == 1 else {
            throw LifeboatError("test.io", "\(path) has no byte at \(offset)")
        }
        try write(path, [~old[0]], at: offset)
        return old[0]
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func makeDirectory(_ path: String) throws {
        guard mkdir(path, 0o700) == 0 else { throw failure("creating directory", path) }
    }

    public static func removeFile(_ path: String) throws {
        guard unlink(path) == 0 else { throw failure("removing", path) }
    }

    /// Names in a directory (without `.` and `..`), sorted.
    public static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw failure("listing", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Every regular file below `root`, as full paths, sorted.
    public static func allFiles(under root: String) throws -> [String] {
        var out: [String] = []
        for name in try list(root) {
            let p = root + "/" + name
            if isDirectory(p) {
                out += try allFiles(under: p)
            } else {
                out.append(p)
            }
        }
        return out.sorted()
    }

    /// The sum of the sizes of every file below `root`.
    public static func treeSize(_ root: String) throws -> Int64 {
        try allFiles(under: root).reduce(Int64(0)) { $0 + (try size($1)) }
    }

    /// Removes a directory tree (or a single file).
    public static func removeTree(_ path: String) throws {
        guard exists(path) else { return }
        if isDirectory(path) {
            for name in try list(path) { try removeTree(path + "/" + name) }
            guard rmdir(path) == 0 else { throw failure("removing directory", path) }
        } else {
            try removeFile(path)
        }
    }

    /// Whether `needle` occurs anywhere in the file (read whole; meant for small test stores).
    public static func contains(_ path: String, _ needle: [UInt8]) throws -> Bool {
        precondition(!needle.isEmpty)
        let hay = try read(path)
        guard hay.count >= needle.count else { return false }
        return hay.withUnsafeBytes { h in
            needle.withUnsafeBytes { n in
                let first = Int32(n[0])
                var start = 0
                let last = h.count - n.count
                while start <= last {
                    guard let hit = memchr(h.baseAddress! + start, first, last - start + 1) else { return false }
                    let at = UnsafeRawPointer(hit) - h.baseAddress!
                    if memcmp(h.baseAddress! + at, n.baseAddress!, n.count) == 0 { return true }
                    start = at + 1
                }
                return false
            }
        }
    }
}

// MARK: - Stores on disk

/// Paths of a store's files by kind, for tests that damage or measure particular objects.
public struct StoreFiles: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    /// Full paths of every pack file.
    public func packs() throws -> Set<String> {
        var out = Set<String>()
        let base = root + "/packs"
        for shard in try FileTools.list(base) where FileTools.isDirectory(base + "/" + shard) {
            for name in try FileTools.list(base + "/" + shard) { out.insert(base + "/" + shard + "/" + name) }
        }
        return out
    }

    public func indexFiles() throws -> Set<String> { try files("index") }
    public func commitFiles() throws -> Set<String> { try files("commits") }

    private func files(_ dir: String) throws -> Set<String> {
        Set(try FileTools.list(root + "/" + dir).map { root + "/" + dir + "/" + $0 })
    }

    /// The sum of the sizes of every file of the store.
    public func totalBytes() throws -> Int64 { try FileTools.treeSize(root) }
}

// MARK: - Comparing bytes

public enum ByteCompare {
    /// The first offset where two byte sequences differ (or where one ends), nil if equal.
    public static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
        let n = min(a.count, b.count)
        let same = a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in n == 0 || memcmp(pa.baseAddress!, pb.baseAddress!, n) == 0 }
        }
        if same { return a.count == b.count ? nil : n }
        for i in 0..<n where a[i] != b[i] { return i }
        return n
    }

    /// 64-bit FNV-1a, to remember large states cheaply.
    public static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        bytes.withUnsafeBufferPointer { buf in
            for b in buf {
                h ^= UInt64(b)
                h = h &* 0x0000_0100_0000_01B3
            }
        }
        return h
    }
}
