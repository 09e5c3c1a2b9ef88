#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
public import LifeboatCore
import LifeboatSystem
import SystemPackage

/// A segment partly written in this commit: its content so far, and its content before (the old entry's),
/// which building it compares with.
struct PendingSegment {
    var content: [UInt8]
    let original: [UInt8]

    static let bytes = 2 * StoreFormat.segmentSize
}

/// A whole segment checked and sealed off the commit's thread (`CommitBuilder.prepareSegment`).
public struct PreparedSegment: @unchecked Sendable {
    /// The segment's bytes (a slice of the extent they arrived in: not copied).
    let content: ArraySlice<UInt8>
    let isZero: Bool
    let fingerprint: BlobID
    /// The sealed chunk body; nil for an all-zero segment.
    let sealed: SealedParts?
    let compressed: Bool
    /// Sealed plain, to be compressed in the background (`Store.compressDeferred`).
    var deferred = false
}

/// Builds one commit of one machine: the changed state of some of its volumes, made durable and visible
/// all at once by `commit()`. Volumes the commit does not touch keep their state from the parent commit.
///
/// Two ways to feed it: `scan(volume:path:)` reads a whole image or block device and stores only the
/// 4 KiB blocks that differ from the parent (agentless ingest, rescans); `write(volume:offset:bytes:)`
/// takes changed extents as a change tracker reports them.
public final class CommitBuilder: @unchecked Sendable {
    let store: Store
    public let machine: String
    public let parent: CommitRecord?
    private var volumes: [String: VolumeState]
    private var volumeOrder: [String]
    /// Leaves changed in this commit, per volume, by leaf index.
    private var dirtyLeaves: [String: [Int: [SegmentEntry]]] = [:]
    /// Extents written but not yet folded into segments: per volume, per segment index, content and mask.
    private var pendingSegments: [String: [Int: PendingSegment]] = [:]
    /// Memory held by pending segments (new content and the content before this commit's writes).
    private var pendingBytes = 0
    private let counters = PlainLock()
    private var storedBytes: UInt64 = 0
    private var finished = false
    private let pool = WorkspacePool()

    /// Pending extents are folded into the map once they exceed this many bytes, bounding memory.
    static let pendingLimit = 128 << 20

    init(store: Store, machine: String, parent: CommitRecord?) {
        self.store = store
        self.machine = machine
        self.parent = parent
        var vols: [String: VolumeState] = [:]
        for v in parent?.volumes ?? [] { vols[v.name] = v }
        self.volumes = vols
        self.volumeOrder = parent?.volumes.map(\.name) ?? []
    }

    private var tree: VolumeTree { VolumeTree(blobs: store.blobs, cipher: store.cipher) }
    private var segments: SegmentBuilder { SegmentBuilder(blobs: store.blobs, cipher: store.cipher) }

    /// The current size of a volume in this commit (nil if the machine has no such volume yet).
    public func size(of volume: String) -> Int64? { volumes[volume]?.size }

    /// Sets a volume's size, creating the volume if needed. Growing is allowed; shrinking is rejected.
    public func setSize(volume: String, size: Int64) throws {
        try Names.validate(volume, kind: "volume")
        guard size >= 0, size <= StoreFormat.maxVolumeSize else {
            throw LifeboatError(
                "store.bad-size",
                "volume size \(size) is out of range: volumes of 0 bytes to 1 PiB are supported"
            )
        }
        if let current = volumes[volume] {
            guard size >= current.size else {
                throw LifeboatError(
                    "store.volume-shrank",
                    "volume '\(volume)' of machine '\(machine)' shrank from \(current.size) to \(size) bytes; "
                        + "a volume may only grow: protect the smaller disk as a new volume instead"
                )
            }
            volumes[volume]!.size = size
        } else {
            volumes[volume] = VolumeState(name: volume, size: size, height: 0, root: nil)
            volumeOrder.append(volume)
        }
    }

    /// Makes `volume` an all-zero volume of `size` bytes in this commit, whatever the parent held: for a
    /// sender whose change tracking restarted from nothing (initial sync after lost state, rescan), whose extents
    /// apply to an empty volume. Call before writing extents of the volume; unlike `setSize`, it may shrink.
    public func reset(volume: String, size: Int64) throws {
        try rebase(volume: volume, onto: nil, size: size)
    }

    /// Makes `volume` start from its state in `base` (an earlier commit of this machine; nil: an empty volume)
    /// instead of the parent's, resized to `size` (growing only, unless `base` is nil): for a sender whose
    /// change set applies to a state older than the latest commit (a commit landed but its acknowledgement was
    /// lost). Call before writing extents of the volume.
    public func rebase(volume: String, onto base: CommitRecord?, size: Int64) throws {
        try checkOpen()
        try Names.validate(volume, kind: "volume")
        guard size >= 0, size <= StoreFormat.maxVolumeSize else {
            throw LifeboatError(
                "store.bad-size",
                "volume size \(size) is out of range: volumes of 0 bytes to 1 PiB are supported"
            )
        }
        var state = VolumeState(name: volume, size: size, height: 0, root: nil)
        var leaves: [BlobID?] = []
        if let base {
            guard base.machine == machine, let old = base.volumes.first(where: { $0.name == volume }) else {
                throw LifeboatError(
                    "store.bad-base",
                    "commit \(base.id) of machine '\(base.machine)' has no volume '\(volume)' to build on"
                )
            }
            guard size >= old.size else {
                throw LifeboatError(
                    "store.volume-shrank",
                    "volume '\(volume)' of machine '\(machine)' shrank from \(old.size) to \(size) bytes; a volume may only grow"
                )
            }
            leaves = try tree.leafIDs(root: old.root, height: old.height, size: old.size)
            state = old
            state.size = size
        }
        if volumes[volume] == nil { volumeOrder.append(volume) }
        volumes[volume] = state
        if let pending = pendingSegments.removeValue(forKey: volume) {
            pendingBytes -= pending.count * PendingSegment.bytes
        }
        dirtyLeaves[volume] = nil
        leafCache[volume] = leaves
        volumesReset.insert(volume)
    }

    /// Records the sender's name for the state this commit gives `volume` (see `VolumeState.sourceEpoch`).
    public func setSourceEpoch(volume: String, epoch: UInt64) throws {
        try checkOpen()
        guard volumes[volume] != nil else {
            throw LifeboatError("store.unknown-volume", "volume '\(volume)' of machine '\(machine)' has no size yet: call setSize first")
        }
        volumes[volume]!.sourceEpoch = epoch
    }

    /// Volumes reset or rebased in this commit: they are rebuilt at commit even if no extent touched them.
    private var volumesReset = Set<String>()

    /// The instant the commit represents (when its data was captured); the time of committing if nil or not
    /// after the parent's time.
    public var captureTime: Timestamp?

    /// False for a commit whose volumes were not captured at one instant (see `CommitRecord.crashConsistent`).
    public var crashConsistent = true

    // MARK: Scanning a whole image

    /// Reads an image file or block device as the new state of `volume` and stores what differs.
    public func scan(volume: String, path: String) throws {
        try checkOpen()
        try Names.validate(volume, kind: "volume")
        let fd = try SystemCalls.wrap("opening", path: path) { try FileDescriptor.open(FilePath(path), .readOnly) }
        defer { try? fd.close() }
        let newSize = try SystemCalls.size(of: fd, path: path)
        try foldPending(volume: volume)
        try setSize(volume: volume, size: newSize)
        let state = volumes[volume]!
        var leaves = try currentLeafIDs(volume)
        let dirty = dirtyLeaves[volume] ?? [:]
        let leafCount = leaves.count
        let results = ParallelSlots<BlobID?>(count: leafCount, initial: nil)
        let changed = ParallelSlots<Bool>(count: leafCount, initial: false)
        let oldLeaves = leaves
        let span = StoreFormat.leafSpan

        try parallelForEach(leafCount) { leafIndex in
            try pool.withWorkspace { ws in
                try ws.withLeafBuffer { buffer in
                    let offset = Int64(leafIndex) * Int64(span)
                    let n = try SystemCalls.preadFully(fd, into: buffer, at: offset, path: path)
                    if n < span {
                        RawMemory.zero(UnsafeMutableRawBufferPointer(rebasing: buffer[n...]))
                    }
                    let old = try dirty[leafIndex] ?? tree.loadLeaf(oldLeaves[leafIndex])
                    var entries = old
                    var stored = 0
                    for s in 0..<StoreFormat.segmentsPerLeaf {
                        let segmentOffset = offset + Int64(s * StoreFormat.segmentSize)
                        if segmentOffset >= newSize {
                            entries[s] = .hole
                            continue
                        }
                        let content = UnsafeRawBufferPointer(
                            rebasing: buffer[(s * StoreFormat.segmentSize)..<((s + 1) * StoreFormat.segmentSize)]
                        )
                        let built: BuiltSegment
                        do {
                            built = try segments.build(old: old[s], new: content, workspace: ws)
                        } catch let error as LifeboatError {
                            throw LifeboatError(
                                error.code,
                                "machine '\(machine)' volume '\(volume)' at offset \(segmentOffset): \(error.message)",
                                cause: error.cause
                            )
                        }
                        entries[s] = built.entry
                        try account(
                            volume: volume,
                            segment: leafIndex * StoreFormat.segmentsPerLeaf + s,
                            maskAgainstOld: built.changedMask,
                            content: content,
                            workspace: ws
                        )
                        stored += built.storedBytes
                    }
                    if entries != old || dirty[leafIndex] != nil {
                        if entries.allSatisfy({ $0 == .hole }) {
                            results[leafIndex] = nil
                        } else {
                            let (id, n) = try tree.storeNode(.leaf(entries), workspace: ws)
                            results[leafIndex] = id
                            stored += n
                        }
                        changed[leafIndex] = true
                    }
                    counters.withLock { storedBytes += UInt64(stored) }
                }
            }
        }
        for i in 0..<leafCount where changed[i] { leaves[i] = results[i] }
        dirtyLeaves[volume] = nil
        try finishVolume(volume, leaves: leaves, size: state.size)
        // What this scan stored must be readable by later steps of the same commit.
        try store.blobs.flushPack()
    }

    // MARK: Accounting against the parent

    /// Per volume and segment: which blocks differ from the parent commit.
    private var changedAgainstParent: [String: [Int: UInt32]] = [:]
    private var parentLeafCache: [String: [BlobID?]] = [:]
    private var parentLeaves: [BlobID: [SegmentEntry]] = [:]

    /// Records which blocks of a segment now differ from the parent commit. `maskAgainstOld` is relative to
    /// the content the segment had before this step; when an earlier step of this commit already changed
    /// the segment, the new content is compared with the parent's instead, so nothing is counted twice.
    private func account(
        volume: String,
        segment: Int,
        maskAgainstOld: UInt32,
        content: UnsafeRawBufferPointer,
        workspace ws: SegmentWorkspace
    ) throws {
        guard maskAgainstOld != 0 else { return }
        let touchedBefore = counters.withLock { changedAgainstParent[volume]?[segment] != nil }
        var mask = maskAgainstOld
        if touchedBefore {
            let entry = try parentEntry(volume: volume, segment: segment)
            try segments.loadContent(of: entry, into: ws.oldContent, workspace: ws)
            mask = blockDifferences(content, UnsafeRawBufferPointer(ws.oldContent))
        }
        counters.withLock { changedAgainstParent[volume, default: [:]][segment] = mask }
    }

    private func parentEntry(volume: String, segment: Int) throws -> SegmentEntry {
        let leafIndex = segment / StoreFormat.segmentsPerLeaf
        let ids = try counters.withLock { () throws -> [BlobID?] in
            if let ids = parentLeafCache[volume] { return ids }
            let original = parent?.volumes.first { $0.name == volume }
            let ids = try tree.leafIDs(root: original?.root, height: original?.height ?? 0, size: original?.size ?? 0)
            parentLeafCache[volume] = ids
            return ids
        }
        guard leafIndex < ids.count, let id = ids[leafIndex] else { return .hole }
        if let leaf = counters.withLock({ parentLeaves[id] }) { return leaf[segment % StoreFormat.segmentsPerLeaf] }
        let leaf = try tree.loadLeaf(id)
        counters.withLock {
            if parentLeaves.count > 64 { parentLeaves.removeAll() }
            parentLeaves[id] = leaf
        }
        return leaf[segment % StoreFormat.segmentsPerLeaf]
    }

    // MARK: Writing extents

    /// Records changed bytes of a volume. `offset` and the length must be multiples of 4 KiB, except that
    /// the last extent may end at the volume's size.
    public func write(volume: String, offset: Int64, bytes: UnsafeRawBufferPointer) throws {
        try checkOpen()
        guard let state = volumes[volume] else {
            throw LifeboatError("store.unknown-volume", "volume '\(volume)' of machine '\(machine)' has no size yet: call setSize first")
        }
        let bs = Int64(StoreFormat.blockSize)
        let misaligned = LifeboatError(
            "store.misaligned",
            "extent at \(offset) of \(bytes.count) bytes is not aligned to \(bs)-byte blocks"
        )
        guard offset >= 0, offset % bs == 0 else { throw misaligned }
        guard offset <= state.size, Int64(bytes.count) <= state.size - offset else {
            throw LifeboatError(
                "store.beyond-end",
                "extent at \(offset) of \(bytes.count) bytes is beyond the end of volume '\(volume)' (\(state.size) bytes)"
            )
        }
        let end = offset + Int64(bytes.count)
        guard bytes.count % StoreFormat.blockSize == 0 || end == state.size else { throw misaligned }
        let seg = Int64(StoreFormat.segmentSize)
        var position = offset
        while position < end {
            let index = Int(position / seg)
            let within = Int(position % seg)
            let count = Int(min(end - position, seg - Int64(within)))
            if pendingSegments[volume]?[index] == nil {
                let content = try currentContent(volume: volume, segment: index)
                pendingSegments[volume, default: [:]][index] = PendingSegment(content: content, original: content)
                pendingBytes += PendingSegment.bytes
            }
            pendingSegments[volume]![index]!.content.withUnsafeMutableBytes { dst in
                dst.baseAddress!.advanced(by: within)
                    .copyMemory(from: bytes.baseAddress!.advanced(by: Int(position - offset)), byteCount: count)
            }
            position += Int64(count)
        }
        if pendingBytes > Self.pendingLimit { try foldPending(volume: nil) }
    }

    // MARK: Writing whole segments compressed by the sender

    /// Checks and seals a whole 64 KiB segment whose compressed form (one zstd frame decoding to exactly
    /// `content`) came from the sender: computes its id and seals the frame as the chunk's body (or the plain
    /// bytes, when the frame does not save 1/32, as the store does for its own compression). Thread-safe and
    /// free of the commit's state: run it on any thread, then hand the result to `putSegment` in write order.
    public func prepareSegment(content: [UInt8], frame: UnsafeRawBufferPointer) throws -> PreparedSegment {
        try prepare(content[...]) { plain, id in
            let useFrame = frame.count <= StoreFormat.segmentSize - StoreFormat.segmentSize / 32
            let sealed = try store.cipher.sealParts(useFrame ? frame : plain, kind: .chunk, context: id.bytes)
            return PreparedSegment(content: content[...], isZero: false, fingerprint: id, sealed: sealed, compressed: useFrame)
        }
    }

    /// Seals a whole 64 KiB segment that arrived uncompressed without compressing it: the sender saw that
    /// compressing would slow the transfer (its link was not the bottleneck), so the chunk is stored plain and
    /// marked deferred, and `Store.compressDeferred` compresses it when the server has time. Thread-safe, like
    /// `prepareSegment(content:frame:)`.
    public func prepareSegment(content: [UInt8]) throws -> PreparedSegment {
        try prepareSegment(content: content[...])
    }

    /// The same for a segment inside a larger buffer (a raw extent as it arrived): the slice is kept, not copied.
    public func prepareSegment(content: ArraySlice<UInt8>) throws -> PreparedSegment {
        try prepare(content) { plain, id in
            let sealed = try store.cipher.sealParts(plain, kind: .chunk, context: id.bytes)
            return PreparedSegment(content: content, isZero: false, fingerprint: id, sealed: sealed, compressed: false, deferred: true)
        }
    }

    /// Checks a whole segment's size; an all-zero one is a hole, else `seal` gets the bytes and their keyed id.
    private func prepare(
        _ content: ArraySlice<UInt8>,
        seal: (UnsafeRawBufferPointer, BlobID) throws -> PreparedSegment
    ) throws -> PreparedSegment {
        guard content.count == StoreFormat.segmentSize else {
            throw LifeboatError("store.misaligned", "a prepared segment must hold \(StoreFormat.segmentSize) bytes, not \(content.count)")
        }
        return try content.withUnsafeBytes { (plain) throws -> PreparedSegment in
            if RawMemory.isZero(plain) { return PreparedSegment(content: content, isZero: true, fingerprint: .zero, sealed: nil, compressed: false) }
            return try seal(plain, store.cipher.id(of: plain))
        }
    }

    /// Writes segment `index` of `volume` whole (its 64 KiB lie inside the volume), as prepared by
    /// `prepareSegment`: like `write` of the same bytes, without compressing them again.
    public func putSegment(volume: String, index: Int, _ prepared: PreparedSegment) throws {
        try checkOpen()
        guard let state = volumes[volume] else {
            throw LifeboatError("store.unknown-volume", "volume '\(volume)' of machine '\(machine)' has no size yet: call setSize first")
        }
        let seg = Int64(StoreFormat.segmentSize)
        guard index >= 0, Int64(index) < state.size / seg else {
            throw LifeboatError(
                "store.beyond-end",
                "segment \(index) is not a whole segment inside volume '\(volume)' (\(state.size) bytes)"
            )
        }
        // The whole segment replaces whatever earlier extents of this commit left pending for it.
        if pendingSegments[volume]?.removeValue(forKey: index) != nil { pendingBytes -= PendingSegment.bytes }
        let perLeaf = StoreFormat.segmentsPerLeaf
        let leafIndex = index / perLeaf
        var leaf: [SegmentEntry]
        if let dirty = dirtyLeaves[volume]?[leafIndex] {
            leaf = dirty
        } else {
            let leaves = try currentLeafIDs(volume)
            leaf = try tree.loadLeaf(leafIndex < leaves.count ? leaves[leafIndex] : nil)
        }
        let old = leaf[index % perLeaf]
        if unflushedSegments, old != .hole {
            // Comparing with the old content reads it back: what this commit stored must be readable.
            try store.blobs.flushPack()
            unflushedSegments = false
        }
        let built = try pool.withWorkspace { (ws) throws -> BuiltSegment in
            try prepared.content.withUnsafeBytes { (content) throws -> BuiltSegment in
                let built = try segments.build(old: old, new: content, workspace: ws, prepared: prepared)
                try account(volume: volume, segment: index, maskAgainstOld: built.changedMask, content: content, workspace: ws)
                return built
            }
        }
        leaf[index % perLeaf] = built.entry
        dirtyLeaves[volume, default: [:]][leafIndex] = leaf
        storedBytes += UInt64(built.storedBytes)
        if built.storedBytes > 0 { unflushedSegments = true }
    }

    /// True when `putSegment` stored chunks that are not readable yet (their pack is still open).
    private var unflushedSegments = false

    /// The content of a segment as this commit currently has it.
    private func currentContent(volume: String, segment index: Int) throws -> [UInt8] {
        if unflushedSegments {
            try store.blobs.flushPack()
            unflushedSegments = false
        }
        let leafIndex = index / StoreFormat.segmentsPerLeaf
        let entry: SegmentEntry
        if let leaf = dirtyLeaves[volume]?[leafIndex] {
            entry = leaf[index % StoreFormat.segmentsPerLeaf]
        } else {
            let leaves = try currentLeafIDs(volume)
            let leaf = try tree.loadLeaf(leafIndex < leaves.count ? leaves[leafIndex] : nil)
            entry = leaf[index % StoreFormat.segmentsPerLeaf]
        }
        var content = [UInt8](repeating: 0, count: StoreFormat.segmentSize)
        try pool.withWorkspace { (ws) throws in
            try content.withUnsafeMutableBytes { (buf) throws in
                try segments.loadContent(of: entry, into: buf, workspace: ws)
            }
        }
        return content
    }

    /// Leaf ids per volume as this commit has them so far (the parent's, until a volume is rebuilt).
    private var leafCache: [String: [BlobID?]] = [:]

    private func currentLeafIDs(_ volume: String) throws -> [BlobID?] {
        let state = volumes[volume]!
        let needed = Int((state.size + Int64(StoreFormat.leafSpan) - 1) / Int64(StoreFormat.leafSpan))
        var ids: [BlobID?]
        if let cached = leafCache[volume] {
            ids = cached
        } else {
            let original = parent?.volumes.first { $0.name == volume }
            ids = try tree.leafIDs(root: original?.root, height: original?.height ?? 0, size: original?.size ?? 0)
            leafCache[volume] = ids
        }
        if ids.count < needed { ids.append(contentsOf: repeatElement(nil, count: needed - ids.count)) }
        return ids
    }

    /// Folds pending extents into dirty leaves (storing their chunks) and makes the chunks readable.
    private func foldPending(volume only: String?) throws {
        for (volume, pending) in pendingSegments where only == nil || only == volume {
            let leaves = try currentLeafIDs(volume)
            // The leaves the pending segments belong to, as this commit has them so far.
            let perLeaf = StoreFormat.segmentsPerLeaf
            var touched: [Int: [SegmentEntry]] = [:]
            for index in pending.keys where touched[index / perLeaf] == nil {
                let leafIndex = index / perLeaf
                touched[leafIndex] = try dirtyLeaves[volume]?[leafIndex] ?? tree.loadLeaf(leafIndex < leaves.count ? leaves[leafIndex] : nil)
            }
            // Build the segments on all cores (compress, encrypt, store: the expensive part), then apply in order.
            let items = Array(pending)
            let oldLeaves = touched
            let results = ParallelSlots<BuiltSegment?>(count: items.count, initial: nil)
            try parallelForEach(items.count) { i in
                let (index, segment) = items[i]
                let old = oldLeaves[index / perLeaf]![index % perLeaf]
                try pool.withWorkspace { (ws) throws in
                    try segment.content.withUnsafeBytes { (buf) throws in
                        // The old entry's content was loaded when the segment became pending: not again.
                        let built = try segment.original.withUnsafeBytes { (original) throws in
                            try segments.build(old: old, new: buf, workspace: ws, oldContent: original)
                        }
                        try account(volume: volume, segment: index, maskAgainstOld: built.changedMask, content: buf, workspace: ws)
                        results[i] = built
                    }
                }
            }
            for (i, item) in items.enumerated() {
                let built = results[i]!
                touched[item.key / perLeaf]![item.key % perLeaf] = built.entry
                storedBytes += UInt64(built.storedBytes)
            }
            for (leafIndex, leaf) in touched { dirtyLeaves[volume, default: [:]][leafIndex] = leaf }
            pendingBytes -= pending.count * PendingSegment.bytes
            pendingSegments[volume] = nil
        }
        try store.blobs.flushPack()
        unflushedSegments = false
    }

    private func finishVolume(_ volume: String, leaves: [BlobID?], size: Int64) throws {
        let (root, height, stored) = try pool.withWorkspace { (ws) throws in
            try tree.build(leaves: leaves, size: size, workspace: ws)
        }
        storedBytes += UInt64(stored)
        volumes[volume]!.root = root
        volumes[volume]!.height = height
        leafCache[volume] = leaves
    }

    // MARK: Committing

    private func checkOpen() throws {
        guard !finished else { throw LifeboatError("store.commit-finished", "this commit was already finished") }
    }

    /// Makes the commit durable and visible. Returns only after everything it refers to is on stable storage.
    public func commit() throws -> CommitRecord {
        try checkOpen()
        do {
            try foldPending(volume: nil)
            for (volume, dirty) in dirtyLeaves {
                var leaves = try currentLeafIDs(volume)
                try pool.withWorkspace { (ws) throws in
                    for (index, entries) in dirty {
                        if entries.allSatisfy({ $0 == .hole }) {
                            leaves[index] = nil
                        } else {
                            let (id, n) = try tree.storeNode(.leaf(entries), workspace: ws)
                            leaves[index] = id
                            storedBytes += UInt64(n)
                        }
                    }
                }
                try finishVolume(volume, leaves: leaves, size: volumes[volume]!.size)
            }
            let rebuilt = Set(dirtyLeaves.keys)
            dirtyLeaves = [:]
            // Volumes that only grew still need a tree of the right height.
            for name in volumeOrder
            where volumesReset.contains(name) && !rebuilt.contains(name)
                || volumes[name]!.height != StoreFormat.height(for: max(volumes[name]!.size, 1))
            {
                try finishVolume(name, leaves: try currentLeafIDs(name), size: volumes[name]!.size)
            }
            let changedBytes = changedAgainstParent.values.reduce(UInt64(0)) { total, masks in
                masks.values.reduce(total) { $0 + UInt64($1.nonzeroBitCount * StoreFormat.blockSize) }
            }
            let record = try store.finishCommit(
                machine: machine,
                parent: parent,
                time: captureTime,
                crashConsistent: crashConsistent,
                volumes: volumeOrder.map { volumes[$0]! },
                changedBytes: changedBytes,
                storedBytes: storedBytes
            )
            finished = true
            return record
        } catch {
            abandon()
            throw error
        }
    }

    /// Drops the commit; nothing of it becomes visible.
    public func abandon() {
        guard !finished else { return }
        finished = true
        store.blobs.abandonCommit()
        store.endCommit()
    }
}
