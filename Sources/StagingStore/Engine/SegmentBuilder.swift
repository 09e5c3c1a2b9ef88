import LifeboatCore

/// Per-thread scratch for building segments: compression context and buffers, reused across segments.
final class SegmentWorkspace {
    let compressor = ZstdCompressor()
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: StoreFormat.segmentSize + 4096, alignment: 64)
    let oldContent = UnsafeMutableRawBufferPointer.allocate(byteCount: StoreFormat.segmentSize, alignment: 64)
    let chunkBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: StoreFormat.segmentSize, alignment: 64)
    /// A whole leaf's worth of volume (4 MiB), allocated on first use and reused: fresh memory would cost
    /// a page fault per 4 KiB on every leaf.
    private(set) lazy var leafBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: StoreFormat.leafSpan, alignment: 4096)
    private var hasLeafBuffer = false

    func withLeafBuffer<T>(_ body: (UnsafeMutableRawBufferPointer) throws -> T) rethrows -> T {
        hasLeafBuffer = true
        return try body(leafBuffer)
    }

    deinit {
        if hasLeafBuffer { leafBuffer.deallocate() }
        scratch.deallocate()
        oldContent.deallocate()
        chunkBuffer.deallocate()
    }
}

/// A small pool so that parallel workers reuse workspaces instead of allocating per segment.
final class WorkspacePool: @unchecked Sendable {
    private let lock = PlainLock()
    private var free: [SegmentWorkspace] = []

    func withWorkspace<T>(_ body: (SegmentWorkspace) throws -> T) throws -> T {
        let ws = lock.withLock { free.popLast() } ?? SegmentWorkspace()
        defer { lock.withLock { free.append(ws) } }
        return try body(ws)
    }
}

/// The result of building one segment.
struct BuiltSegment {
    var entry: SegmentEntry
    /// Bit b set: block b differs from the old entry's content.
    var changedMask: UInt32
    var storedBytes: Int
}

/// Turns the new content of a 64 KiB segment plus its previous entry into a new entry, storing only what
/// changed: an unchanged segment (same fingerprint) costs one keyed hash; a segment with a few changed
/// 4 KiB blocks stores just those blocks; a mostly rewritten one is stored whole.
struct SegmentBuilder {
    let blobs: BlobRepository
    let cipher: BlobCipher

    /// Blocks changed at or above this count make the segment be stored as one whole chunk.
    static let wholeThreshold = StoreFormat.blocksPerSegment / 2

    func build(
        old: SegmentEntry,
        new content: UnsafeRawBufferPointer,
        workspace ws: SegmentWorkspace,
        prepared: PreparedSegment? = nil,
        oldContent known: UnsafeRawBufferPointer? = nil
    ) throws -> BuiltSegment {
        precondition(content.count == StoreFormat.segmentSize)
        let newIsZero = prepared?.isZero ?? RawMemory.isZero(content)
        if newIsZero, case .hole = old { return BuiltSegment(entry: .hole, changedMask: 0, storedBytes: 0) }
        let fingerprint = newIsZero ? BlobID.zero : prepared?.fingerprint ?? cipher.id(of: content)
        if !newIsZero, old.fingerprint == fingerprint {
            return BuiltSegment(entry: old, changedMask: 0, storedBytes: 0)
        }
        // Find which blocks changed.
        let oldIsHole: Bool
        if case .hole = old { oldIsHole = true } else { oldIsHole = false }
        // The old entry's bytes: given by the caller (who loaded them already), or loaded now.
        var oldBytes = UnsafeRawBufferPointer(ws.oldContent)
        if !oldIsHole {
            if let known, known.count == StoreFormat.segmentSize {
                oldBytes = known
            } else {
                try loadContent(of: old, into: ws.oldContent, workspace: ws)
            }
        }
        var changed = [Bool](repeating: false, count: StoreFormat.blocksPerSegment)
        var changedCount = 0
        var changedMask: UInt32 = 0
        let bs = StoreFormat.blockSize
        for b in 0..<StoreFormat.blocksPerSegment {
            let newBlock = UnsafeRawBufferPointer(rebasing: content[(b * bs)..<((b + 1) * bs)])
            let differs: Bool
            if oldIsHole {
                differs = !RawMemory.isZero(newBlock)
            } else {
                differs = memcmp(newBlock.baseAddress!, oldBytes.baseAddress! + b * bs, bs) != 0
            }
            if differs {
                changed[b] = true
                changedCount += 1
                changedMask |= 1 << UInt32(b)
            }
        }
        if newIsZero { return BuiltSegment(entry: .hole, changedMask: changedMask, storedBytes: 0) }
        if changedCount == 0 {
            // Same bytes; the old entry's fingerprint was stale. Keep its chunks with the right fingerprint.
            if case .composite(_, let runs) = old {
                return BuiltSegment(entry: .composite(fingerprint: fingerprint, runs: runs), changedMask: 0, storedBytes: 0)
            }
            return BuiltSegment(entry: old, changedMask: 0, storedBytes: 0)
        }
        if changedCount >= Self.wholeThreshold {
            if let prepared, let sealed = prepared.sealed {
                let stored = try blobs.storeSealed(
                    fingerprint,
                    kind: .chunk,
                    sealed: sealed,
                    rawLength: StoreFormat.segmentSize,
                    compressed: prepared.compressed,
                    deferred: prepared.deferred
                )
                return BuiltSegment(entry: .whole(fingerprint), changedMask: changedMask, storedBytes: stored)
            }
            let stored = try blobs.store(
                fingerprint,
                kind: .chunk,
                plaintext: content,
                compressor: ws.compressor,
                scratch: ws.scratch
            )
            return BuiltSegment(entry: .whole(fingerprint), changedMask: changedMask, storedBytes: stored)
        }
        var refs = old.blockReferences()
        var stored = 0
        var b = 0
        while b < StoreFormat.blocksPerSegment {
            guard changed[b] else {
                b += 1
                continue
            }
            var end = b + 1
            while end < StoreFormat.blocksPerSegment && changed[end] { end += 1 }
            let bytes = UnsafeRawBufferPointer(rebasing: content[(b * bs)..<(end * bs)])
            if RawMemory.isZero(bytes) {
                for i in b..<end { refs[i] = (nil, 0) }
            } else {
                let id = cipher.id(of: bytes)
                stored += try blobs.store(id, kind: .chunk, plaintext: bytes, compressor: ws.compressor, scratch: ws.scratch)
                for i in b..<end { refs[i] = (id, UInt8(i - b)) }
            }
            b = end
        }
        return BuiltSegment(
            entry: .composite(fingerprint: fingerprint, runs: SegmentEntry.runs(from: refs)),
            changedMask: changedMask,
            storedBytes: stored
        )
    }

    /// Reassembles a segment's bytes from its chunks.
    func loadContent(
        of entry: SegmentEntry,
        into destination: UnsafeMutableRawBufferPointer,
        workspace ws: SegmentWorkspace
    ) throws {
        switch entry {
        case .hole:
            RawMemory.zero(destination)
        case .whole(let id):
            let n = try blobs.read(id, kind: .chunk, into: destination)
            guard n == StoreFormat.segmentSize else {
                throw LifeboatError("store.corrupt", "chunk \(id.short) should hold a whole segment but has \(n) bytes")
            }
        case .composite(_, let runs):
            let bs = StoreFormat.blockSize
            var block = 0
            var loaded: BlobID? = nil
            var loadedLength = 0
            for run in runs {
                let target = UnsafeMutableRawBufferPointer(
                    rebasing: destination[(block * bs)..<((block + Int(run.blocks)) * bs)]
                )
                if let chunk = run.chunk {
                    if loaded != chunk {
                        loadedLength = try blobs.read(chunk, kind: .chunk, into: ws.chunkBuffer)
                        loaded = chunk
                    }
                    let from = Int(run.firstBlock) * bs
                    let to = from + Int(run.blocks) * bs
                    guard to <= loadedLength else {
                        throw LifeboatError("store.corrupt", "chunk \(chunk.short) is shorter than the map says")
                    }
                    RawMemory.copy(UnsafeRawBufferPointer(rebasing: ws.chunkBuffer[from..<to]), to: target)
                } else {
                    RawMemory.zero(target)
                }
                block += Int(run.blocks)
            }
        }
    }
}

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif

/// Which 4 KiB blocks differ between two 64 KiB segments.
func blockDifferences(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> UInt32 {
    var mask: UInt32 = 0
    let bs = StoreFormat.blockSize
    for i in 0..<StoreFormat.blocksPerSegment where memcmp(a.baseAddress! + i * bs, b.baseAddress! + i * bs, bs) != 0 {
        mask |= 1 << UInt32(i)
    }
    return mask
}

