import LifeboatCore
import LifeboatSystem
import SystemPackage

/// A writable disk made of a read-only base export and a copy-on-write overlay that belongs to one recovery
/// instance: the base is never written.
///
/// The overlay is two files in its own directory: `overlay.data`, a sparse file of the volume's size holding
/// the blocks written, and `overlay.map`, which says for every 4 KiB block whether it still reads from the
/// base, from `overlay.data`, or as zeroes (after WRITE_ZEROES or TRIM). The map is rewritten atomically after
/// `overlay.data` is synced, on `flush()` and on `close()`, so the overlay survives a restart of the server;
/// a damaged map is an error (`recovery.overlay-damaged`), never silently lost writes.
///
/// Reads may run concurrently with each other and with writes; writes are serialized (a partial-block write
/// is a read-modify-write of the whole block).
public final class OverlayExport: NBDExport, @unchecked Sendable {
    public let name: String
    public let base: any NBDExport
    public let directory: String
    public let size: Int64
    let dataPath: String
    let mapPath: String
    private let fd: FileDescriptor
    private var map: OverlayMap
    /// Guards `map`, `dirty` and `isOpen` for short sections.
    private let lock = PlainLock()
    /// Serializes writes, flushes and closing.
    private let writeLock = PlainLock()
    private var dirty = false
    private var isOpen = true

    public static let blockSize = OverlayMap.blockSize
    public static let dataFileName = "overlay.data"
    public static let mapFileName = "overlay.map"

    /// Opens the overlay in `directory` (created if absent), or makes a new, empty one.
    ///
    /// - Throws: `recovery.overlay-damaged` when the map is unreadable, belongs to a volume of another size,
    ///   or is missing while data is present; `io.*` errors from the filesystem.
    public init(name: String, base: any NBDExport, directory: String) throws {
        self.name = name
        self.base = base
        self.directory = directory
        self.size = base.size
        dataPath = directory + "/" + Self.dataFileName
        mapPath = directory + "/" + Self.mapFileName
        if !SystemCalls.isDirectory(directory) { try SystemCalls.makeDirectory(directory) }
        let hasData = SystemCalls.exists(dataPath)
        let hasMap = SystemCalls.exists(mapPath)
        if hasMap {
            guard hasData else {
                throw LifeboatError("recovery.overlay-damaged", "overlay \(directory) has a map but no \(Self.dataFileName)")
            }
            let bytes = try SystemCalls.readFile(mapPath)
            do {
                map = try OverlayMap(decoding: bytes, volumeSize: base.size)
            } catch {
                throw LifeboatError(
                    "recovery.overlay-damaged",
                    "the overlay map \(mapPath) is damaged: the writes of this recovery instance cannot be trusted",
                    cause: error
                )
            }
        } else {
            guard !hasData else {
                throw LifeboatError(
                    "recovery.overlay-damaged",
                    "overlay \(directory) has data but no \(Self.mapFileName): its writes cannot be located"
                )
            }
            map = OverlayMap(volumeSize: base.size)
        }
        let path = dataPath
        fd = try SystemCalls.wrap("opening", path: path) {
            try FileDescriptor.open(
                FilePath(path),
                .readWrite,
                options: [.create],
                permissions: FilePermissions(rawValue: 0o600)
            )
        }
        do {
            if !hasMap {
                _ = try SystemCalls.wrap("sizing", path: path) { try fd.resize(to: base.size) }
                try SystemCalls.fsync(fd, path: path)
                try SystemCalls.writeFileAtomically(mapPath, map.encoded())
            }
        } catch {
            try? fd.close()
            throw error
        }
    }

    public var isReadOnly: Bool { false }

    /// The number of 4 KiB blocks the overlay holds (written or zeroed).
    public var changedBlocks: Int { lock.withLock { map.changedBlocks } }

    /// Which blocks differ from the base, for failback: indices of 4 KiB blocks written or zeroed.
    public func changedBlockIndices() -> [Int] {
        lock.withLock { (0..<map.blockCount).filter { map[$0] != .base } }
    }

    private func checkOpen() throws {
        guard lock.withLock({ isOpen }) else {
            throw LifeboatError("recovery.overlay-closed", "the overlay of export '\(name)' is closed")
        }
    }

    private func blockRange(_ block: Int) -> (start: Int64, length: Int) {
        let start = Int64(block) * Int64(Self.blockSize)
        return (start, Int(min(Int64(Self.blockSize), size - start)))
    }

    // MARK: Reading

    public func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkOpen()
        guard buffer.count > 0 else { return }
        let bs = Int64(Self.blockSize)
        let first = Int(offset / bs)
        let last = Int((offset + Int64(buffer.count) - 1) / bs)
        let states = lock.withLock { (first...last).map { map[$0] } }
        var done = 0
        var i = 0
        while i < states.count {
            var j = i + 1
            while j < states.count && states[j] == states[i] { j += 1 }
            let runEnd = min(offset + Int64(buffer.count), Int64(first + j) * bs)
            let position = offset + Int64(done)
            let count = Int(runEnd - position)
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
            switch states[i] {
            case .base: try base.read(at: position, into: target)
            case .data: try readData(at: position, into: target)
            case .zero: RawMemory.zero(target)
            }
            done += count
            i = j
        }
    }

    private func readData(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let n = try SystemCalls.preadFully(fd, into: buffer, at: offset, path: dataPath)
        if n < buffer.count {
            throw LifeboatError("recovery.overlay-damaged", "\(dataPath) is shorter than the volume (read at \(offset))")
        }
    }

    // MARK: Writing

    public func write(at offset: Int64, from bytes: UnsafeRawBufferPointer) throws {
        try modify(at: offset, length: Int64(bytes.count), zero: false) { position, target in
            let from = Int(position - offset)
            RawMemory.copy(UnsafeRawBufferPointer(rebasing: bytes[from..<(from + target.count)]), to: target)
        } fullBlocks: { start, count in
            let from = Int(start - offset)
            try SystemCalls.pwriteFully(fd, UnsafeRawBufferPointer(rebasing: bytes[from..<(from + count)]), at: start, path: dataPath)
        }
    }

    public func writeZeroes(at offset: Int64, length: Int64) throws {
        try modify(at: offset, length: length, zero: true) { _, target in
            RawMemory.zero(target)
        } fullBlocks: { _, _ in }
    }

    /// Trimmed blocks read as zeroes: the same as WRITE_ZEROES.
    public func trim(at offset: Int64, length: Int64) throws {
        try writeZeroes(at: offset, length: length)
    }

    /// Applies a change to `length` bytes at `offset`. Whole blocks go to `fullBlocks` (a run at a time);
    /// partial blocks are read, patched by `patch` and written back whole.
    private func modify(
        at offset: Int64,
        length: Int64,
        zero: Bool,
        patch: (Int64, UnsafeMutableRawBufferPointer) throws -> Void,
        fullBlocks: (Int64, Int) throws -> Void
    ) throws {
        guard length > 0 else { return }
        try writeLock.withLock {
            try checkOpen()
            let bs = Int64(Self.blockSize)
            let end = offset + length
            let first = Int(offset / bs)
            let last = Int((end - 1) / bs)
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.blockSize, alignment: 64)
            defer { scratch.deallocate() }
            var runStart: Int? = nil
            var whole: [Int] = []
            var patched: [Int] = []
            func endRun(before block: Int) throws {
                guard let s = runStart else { return }
                let start = blockRange(s).start
                let stop = blockRange(block - 1)
                try fullBlocks(start, Int(stop.start + Int64(stop.length) - start))
                runStart = nil
            }
            for block in first...last {
                let (start, count) = blockRange(block)
                let from = max(offset, start)
                let to = min(end, start + Int64(count))
                if from == start && to == start + Int64(count) {
                    if runStart == nil { runStart = block }
                    whole.append(block)
                    continue
                }
                try endRun(before: block)
                let content = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<count])
                try read(at: start, into: content)
                try patch(from, UnsafeMutableRawBufferPointer(rebasing: content[Int(from - start)..<Int(to - start)]))
                try SystemCalls.pwriteFully(fd, UnsafeRawBufferPointer(content), at: start, path: dataPath)
                patched.append(block)
            }
            try endRun(before: last + 1)
            lock.withLock {
                for b in whole { map[b] = zero ? .zero : .data }
                for b in patched { map[b] = .data }
                dirty = true
            }
        }
    }

    // MARK: Durability

    /// Syncs the data file, then replaces the map: every write completed before is durable afterwards.
    public func flush() throws {
        try writeLock.withLock {
            try checkOpen()
            try persist()
        }
    }

    private func persist() throws {
        let snapshot: [UInt8]? = lock.withLock { dirty ? map.encoded() : nil }
        guard let snapshot else { return }
        try SystemCalls.fsync(fd, path: dataPath)
        try SystemCalls.writeFileAtomically(mapPath, snapshot)
        lock.withLock { dirty = false }
    }

    /// Makes every write durable and closes the files. The overlay can be opened again.
    public func close() throws {
        try writeLock.withLock {
            guard lock.withLock({ isOpen }) else { return }
            defer {
                lock.withLock { isOpen = false }
                try? fd.close()
            }
            try persist()
        }
    }

    /// Deletes the overlay (the recovery instance is gone): its writes are lost, the base is untouched.
    public func discard() throws {
        try writeLock.withLock {
            let wasOpen = lock.withLock {
                defer { isOpen = false }
                return isOpen
            }
            if wasOpen { try? fd.close() }
            for path in [mapPath, dataPath] where SystemCalls.exists(path) { try SystemCalls.unlink(path) }
            try SystemCalls.fsyncDirectory(directory)
        }
    }

    // MARK: Block status

    /// Per 4 KiB block: zeroed blocks are `HOLE|ZERO`, written blocks data, the rest as the base says.
    public func blockStatus(at offset: Int64, length: Int64) throws -> [NBDExtent] {
        try checkOpen()
        let bs = Int64(Self.blockSize)
        let end = min(size, offset + length)
        guard end > offset else { return [] }
        let first = Int(offset / bs)
        let last = Int((end - 1) / bs)
        let states = lock.withLock { (first...last).map { map[$0] } }
        var extents: [NBDExtent] = []
        func append(_ count: Int64, _ flags: UInt32) {
            var remaining = count
            while remaining > 0 {
                let piece = UInt32(min(remaining, Int64(UInt32.max) & ~(bs - 1)))
                if let l = extents.last, l.flags == flags, UInt64(l.length) + UInt64(piece) <= UInt64(UInt32.max) {
                    extents[extents.count - 1].length += piece
                } else {
                    extents.append(NBDExtent(length: piece, flags: flags))
                }
                remaining -= Int64(piece)
            }
        }
        var i = 0
        while i < states.count {
            var j = i + 1
            while j < states.count && states[j] == states[i] { j += 1 }
            let from = max(offset, Int64(first + i) * bs)
            let to = min(end, Int64(first + j) * bs)
            switch states[i] {
            case .data: append(to - from, 0)
            case .zero: append(to - from, NBD.Allocation.hole | NBD.Allocation.zero)
            case .base:
                for e in try base.blockStatus(at: from, length: to - from) { append(Int64(e.length), e.flags) }
            }
            i = j
        }
        return extents
    }
}
