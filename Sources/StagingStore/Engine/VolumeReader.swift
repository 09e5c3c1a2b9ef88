#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import LifeboatCore
import LifeboatSystem
import SystemPackage
import CLinuxShims

/// Reads one volume as it was at one recovery point: any byte range, with memory bounded by small caches
/// (independent of the volume's size) and a lookup cost of one root-to-leaf path (independent of the
/// number of commits). Every byte is authenticated; damage is reported with machine, volume, point and
/// offset. Safe to use from several threads.
public final class VolumeReader: @unchecked Sendable {
    public let commit: CommitRecord
    public let volume: VolumeState
    let store: Store
    private let tree: VolumeTree
    private let segments: SegmentBuilder
    private let cacheLock = PlainLock()
    private var nodeCache: [BlobID: MapNode] = [:]
    private var leafCache: [Int: [SegmentEntry]] = [:]
    private let pool = WorkspacePool()
    static let cacheLimit = 256

    public init(store: Store, commit: CommitRecord, volume name: String) throws {
        guard let volume = commit.volumes.first(where: { $0.name == name }) else {
            throw LifeboatError(
                "store.unknown-volume",
                "machine '\(commit.machine)' has no volume '\(name)' at point \(commit.id) (volumes: \(commit.volumes.map(\.name).joined(separator: ", ")))"
            )
        }
        self.store = store
        self.commit = commit
        self.volume = volume
        self.tree = VolumeTree(blobs: store.blobs, cipher: store.cipher)
        self.segments = SegmentBuilder(blobs: store.blobs, cipher: store.cipher)
    }

    public var size: Int64 { volume.size }

    func damaged(_ error: any Error, offset: Int64) -> LifeboatError {
        let inner = error as? LifeboatError
        return LifeboatError(
            inner?.code ?? "store.corrupt",
            "machine '\(commit.machine)' volume '\(volume.name)' point \(commit.id) offset \(offset): "
                + (inner?.message ?? "\(error)"),
            cause: inner?.cause ?? error
        )
    }

    private func node(_ id: BlobID) throws -> MapNode {
        if let n = cacheLock.withLock({ nodeCache[id] }) { return n }
        let n = try tree.loadNode(id)
        cacheLock.withLock {
            if nodeCache.count >= Self.cacheLimit { nodeCache.removeAll(keepingCapacity: true) }
            nodeCache[id] = n
        }
        return n
    }

    /// The segment entries of one leaf (4 MiB of the volume).
    func leaf(_ index: Int) throws -> [SegmentEntry] {
        if let l = cacheLock.withLock({ leafCache[index] }) { return l }
        var id = volume.root
        var h = volume.height
        while h > 0, let current = id {
            guard case .inner(let nodeHeight, let children) = try node(current), nodeHeight == h else {
                throw LifeboatError("store.corrupt", "map node \(current.short) should be an inner node of height \(h)")
            }
            let span = Int(StoreFormat.span(height: h - 1) / Int64(StoreFormat.leafSpan))
            let child = (index / span) % StoreFormat.fanout
            id = child < children.count ? children[child] : nil
            h -= 1
        }
        let entries = try tree.loadLeaf(id)
        cacheLock.withLock {
            if leafCache.count >= Self.cacheLimit { leafCache.removeAll(keepingCapacity: true) }
            leafCache[index] = entries
        }
        return entries
    }

    /// What a segment holds (for allocation maps: holes read as zero and store nothing).
    func segment(_ index: Int) throws -> SegmentEntry {
        try leaf(index / StoreFormat.segmentsPerLeaf)[index % StoreFormat.segmentsPerLeaf]
    }

    /// Whether the 64 KiB segment at `index` is a hole.
    public func isHole(segment index: Int) throws -> Bool {
        do {
            return try segment(index) == .hole
        } catch {
            throw damaged(error, offset: Int64(index) * Int64(StoreFormat.segmentSize))
        }
    }

    /// Fills `buffer` with the volume's bytes at `offset`. The range must lie inside the volume.
    public func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard offset >= 0, offset <= volume.size, Int64(buffer.count) <= volume.size - offset else {
            throw LifeboatError(
                "store.beyond-end",
                "read of \(buffer.count) bytes at \(offset) is outside volume '\(volume.name)' (\(volume.size) bytes)"
            )
        }
        let seg = Int64(StoreFormat.segmentSize)
        var done = 0
        try pool.withWorkspace { ws in
            while done < buffer.count {
                let position = offset + Int64(done)
                let index = Int(position / seg)
                let within = Int(position % seg)
                let count = min(buffer.count - done, Int(seg) - within)
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
                do {
                    let entry = try segment(index)
                    if entry == .hole {
                        RawMemory.zero(target)
                    } else if within == 0 && count == Int(seg) {
                        try segments.loadContent(of: entry, into: target, workspace: ws)
                    } else {
                        try segments.loadContent(of: entry, into: ws.oldContent, workspace: ws)
                        RawMemory.copy(UnsafeRawBufferPointer(rebasing: ws.oldContent[within..<(within + count)]), to: target)
                    }
                } catch {
                    throw damaged(error, offset: position)
                }
                done += count
            }
        }
    }
}

extension Store {
    /// Opens a reader for a volume at a point.
    public func reader(machine: String, volume: String, point: String) throws -> VolumeReader {
        try VolumeReader(store: self, commit: try resolvePoint(point, machine: machine), volume: volume)
    }

    /// Writes a volume at a point to `path` as a sparse raw image: holes are not written. The file appears
    /// complete or not at all (written to `path.partial`, synced, renamed).
    @discardableResult
    public func export(_ reader: VolumeReader, to path: String) throws -> Int64 {
        let partial = path + ".partial"
        let fd = try SystemCalls.wrap("creating", path: partial) {
            try FileDescriptor.open(
                FilePath(partial),
                .readWrite,
                options: [.create, .truncate],
                permissions: FilePermissions(rawValue: 0o600)
            )
        }
        var keep = false
        defer {
            try? fd.close()
            if !keep { try? SystemCalls.unlink(partial) }
        }
        _ = try SystemCalls.wrap("sizing", path: partial) { try fd.resize(to: reader.size) }
        let leafCount = Int((reader.size + Int64(StoreFormat.leafSpan) - 1) / Int64(StoreFormat.leafSpan))
        let written = ParallelSlots<Int64>(count: leafCount, initial: 0)
        let segments = SegmentBuilder(blobs: blobs, cipher: cipher)
        let pool = WorkspacePool()
        try parallelForEach(leafCount) { leafIndex in
            try pool.withWorkspace { ws in
                try ws.withLeafBuffer { buffer in
                    written[leafIndex] = try exportLeaf(
                        leafIndex,
                        of: reader,
                        buffer: buffer,
                        workspace: ws,
                        segments: segments,
                        to: fd,
                        path: partial
                    )
                }
            }
        }
        try SystemCalls.fsync(fd, path: partial)
        try SystemCalls.rename(partial, path)
        keep = true
        try SystemCalls.fsyncDirectory(SystemCalls.parent(of: path))
        var total: Int64 = 0
        for i in 0..<leafCount { total += written[i] }
        return total
    }

    /// Assembles one 4 MiB leaf in `buffer`, then writes each run of non-zero blocks with one pwrite: few,
    /// large writes keep the kernel's per-call and inode-lock costs low. Returns the bytes written.
    private func exportLeaf(
        _ leafIndex: Int,
        of reader: VolumeReader,
        buffer: UnsafeMutableRawBufferPointer,
        workspace ws: SegmentWorkspace,
        segments: SegmentBuilder,
        to fd: FileDescriptor,
        path: String
    ) throws -> Int64 {
        let leafOffset = Int64(leafIndex) * Int64(StoreFormat.leafSpan)
        let entries: [SegmentEntry]
        do {
            entries = try reader.leaf(leafIndex)
        } catch {
            throw reader.damaged(error, offset: leafOffset)
        }
        let span = Int(min(Int64(StoreFormat.leafSpan), reader.size - leafOffset))
        var present = [Bool](repeating: false, count: StoreFormat.segmentsPerLeaf)
        for (s, entry) in entries.enumerated() where entry != .hole {
            let start = s * StoreFormat.segmentSize
            guard start < span else { break }
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + StoreFormat.segmentSize)])
            do {
                try segments.loadContent(of: entry, into: target, workspace: ws)
            } catch {
                throw reader.damaged(error, offset: leafOffset + Int64(start))
            }
            present[s] = true
        }
        var written: Int64 = 0
        var runStart = -1
        func flush(upTo end: Int) throws {
            guard runStart >= 0 else { return }
            try SystemCalls.pwriteFully(
                fd,
                UnsafeRawBufferPointer(rebasing: buffer[runStart..<end]),
                at: leafOffset + Int64(runStart),
                path: path
            )
            written += Int64(end - runStart)
            runStart = -1
        }
        var b = 0
        while b < span {
            let end = min(b + StoreFormat.blockSize, span)
            let nonZero =
                present[b / StoreFormat.segmentSize] && !RawMemory.isZero(UnsafeRawBufferPointer(rebasing: buffer[b..<end]))
            if nonZero {
                if runStart < 0 { runStart = b }
            } else {
                try flush(upTo: b)
            }
            b = end
        }
        try flush(upTo: span)
        // Let the disk work while the next leaves are decrypted: the final fsync then has little left.
        if written > 0 { _ = lifeboat_start_writeback_range(fd.rawValue, leafOffset, Int64(span)) }
        return written
    }
}
