public import LifeboatCore

/// A disk the NBD server offers under a name: a volume at a recovery point, read-only, or the same with a
/// copy-on-write overlay.
///
/// Every method blocks on disk I/O: the server calls them on a thread pool, never on an event loop, and
/// several at once (they must be safe to call concurrently). Ranges passed in lie inside the export (the
/// server checks). Failures are `LifeboatError`s; the server answers them with an NBD error
/// (`nbd.read-only` → EPERM, `io.no-space` → ENOSPC, anything else → EIO).
public protocol NBDExport: Sendable {
    /// The name clients ask for.
    var name: String { get }
    /// The size in bytes.
    var size: Int64 { get }
    var isReadOnly: Bool { get }

    /// Fills `buffer` with the bytes at `offset`.
    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws
    /// Writes `bytes` at `offset`.
    func write(at offset: Int64, from bytes: UnsafeRawBufferPointer) throws
    /// Makes `length` bytes at `offset` read as zeroes.
    func writeZeroes(at offset: Int64, length: Int64) throws
    /// Discards `length` bytes at `offset` (they read as zeroes afterwards).
    func trim(at offset: Int64, length: Int64) throws
    /// Makes every completed write durable.
    func flush() throws
    /// The allocation state of `length` bytes at `offset` as consecutive extents (`NBD.Allocation` flags);
    /// they may cover less than `length`, never more than the export.
    func blockStatus(at offset: Int64, length: Int64) throws -> [NBDExtent]
}

extension NBDExport {
    /// What negotiation tells a client about this export.
    public var info: NBDExportInfo {
        NBDExportInfo(name: name, size: UInt64(size), isReadOnly: isReadOnly)
    }

    /// The error every write-like call of a read-only export throws.
    public func readOnlyError(location: SourceLocation = .here()) -> LifeboatError {
        LifeboatError("nbd.read-only", "export '\(name)' is read-only", location: location)
    }
}
