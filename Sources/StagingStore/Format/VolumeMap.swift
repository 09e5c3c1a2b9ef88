import LifeboatCore

/// A run of consecutive blocks inside a segment that come from one place: a hole, or consecutive blocks of
/// one chunk starting at `firstBlock`.
struct BlockRun: Sendable, Equatable {
    var blocks: UInt8
    var chunk: BlobID?
    var firstBlock: UInt8
}

/// What one 64 KiB segment of a volume holds.
enum SegmentEntry: Sendable, Equatable {
    /// All zero; nothing stored.
    case hole
    /// One chunk holds the whole segment; its id is also the segment's fingerprint.
    case whole(BlobID)
    /// Assembled from runs of blocks of several chunks (after small changes); `fingerprint` is the keyed
    /// hash of the whole segment's content, so an unchanged segment is recognised without reading it.
    case composite(fingerprint: BlobID, runs: [BlockRun])

    var fingerprint: BlobID? {
        switch self {
        case .hole: nil
        case .whole(let id): id
        case .composite(let fp, _): fp
        }
    }

    /// The chunk and block inside it for each of the segment's blocks (nil = hole).
    func blockReferences() -> [(chunk: BlobID?, block: UInt8)] {
        switch self {
        case .hole:
            return Array(repeating: (nil, 0), count: StoreFormat.blocksPerSegment)
        case .whole(let id):
            return (0..<StoreFormat.blocksPerSegment).map { (id, UInt8($0)) }
        case .composite(_, let runs):
            var refs: [(chunk: BlobID?, block: UInt8)] = []
            refs.reserveCapacity(StoreFormat.blocksPerSegment)
            for run in runs {
                for i in 0..<Int(run.blocks) { refs.append((run.chunk, run.chunk == nil ? 0 : run.firstBlock + UInt8(i))) }
            }
            return refs
        }
    }

    /// Folds per-block references back into runs.
    static func runs(from refs: [(chunk: BlobID?, block: UInt8)]) -> [BlockRun] {
        var runs: [BlockRun] = []
        for ref in refs {
            if var last = runs.last, last.chunk == ref.chunk,
                ref.chunk == nil || last.firstBlock + last.blocks == ref.block
            {
                last.blocks += 1
                runs[runs.count - 1] = last
            } else {
                runs.append(BlockRun(blocks: 1, chunk: ref.chunk, firstBlock: ref.chunk == nil ? 0 : ref.block))
            }
        }
        return runs
    }
}

/// A node of a volume's map: a copy-on-write radix tree over the volume's segments. Leaves (height 0) hold
/// 64 segment entries (4 MiB of volume); inner nodes hold up to 64 child ids. Unchanged subtrees are shared
/// between commits, so every commit is a complete map and a lookup costs one path from the root.
enum MapNode: Sendable, Equatable {
    case leaf([SegmentEntry])
    case inner(height: Int, children: [BlobID?])

    static let leafTag: UInt8 = 1
    static let innerTag: UInt8 = 2

    func encoded() -> [UInt8] {
        switch self {
        case .leaf(let segments):
            var w = ByteWriter(capacity: 2 + segments.count * 33)
            w.u8(Self.leafTag)
            w.u8(UInt8(segments.count))
            for s in segments {
                switch s {
                case .hole:
                    w.u8(0)
                case .whole(let id):
                    w.u8(1)
                    w.id(id)
                case .composite(let fp, let runs):
                    w.u8(2)
                    w.id(fp)
                    w.u8(UInt8(runs.count))
                    for run in runs {
                        w.u8(run.blocks)
                        if let chunk = run.chunk {
                            w.u8(1)
                            w.id(chunk)
                            w.u8(run.firstBlock)
                        } else {
                            w.u8(0)
                        }
                    }
                }
            }
            return w.bytes
        case .inner(let height, let children):
            var w = ByteWriter(capacity: 3 + children.count * 33)
            w.u8(Self.innerTag)
            w.u8(UInt8(height))
            w.u8(UInt8(children.count))
            for child in children {
                if let child {
                    w.u8(1)
                    w.id(child)
                } else {
                    w.u8(0)
                }
            }
            return w.bytes
        }
    }

    static func decode(_ bytes: [UInt8], id: BlobID) throws -> MapNode {
        var r = ByteReader(bytes, what: "map node \(id.short)")
        let tag = try r.u8()
        func corrupt(_ why: String) -> LifeboatError {
            LifeboatError("store.corrupt", "map node \(id.short) is malformed: \(why)")
        }
        switch tag {
        case leafTag:
            let count = Int(try r.u8())
            guard count <= StoreFormat.segmentsPerLeaf else { throw corrupt("\(count) segments") }
            var segments: [SegmentEntry] = []
            segments.reserveCapacity(count)
            for _ in 0..<count {
                switch try r.u8() {
                case 0: segments.append(.hole)
                case 1: segments.append(.whole(try r.id()))
                case 2:
                    let fp = try r.id()
                    let n = Int(try r.u8())
                    var runs: [BlockRun] = []
                    var total = 0
                    for _ in 0..<n {
                        let blocks = try r.u8()
                        let hasChunk = try r.u8()
                        if hasChunk == 1 {
                            let chunk = try r.id()
                            let first = try r.u8()
                            guard Int(first) + Int(blocks) <= StoreFormat.blocksPerSegment else {
                                throw corrupt("run beyond its chunk")
                            }
                            runs.append(BlockRun(blocks: blocks, chunk: chunk, firstBlock: first))
                        } else if hasChunk == 0 {
                            runs.append(BlockRun(blocks: blocks, chunk: nil, firstBlock: 0))
                        } else {
                            throw corrupt("bad run tag")
                        }
                        guard blocks > 0 else { throw corrupt("empty run") }
                        total += Int(blocks)
                    }
                    guard total == StoreFormat.blocksPerSegment else { throw corrupt("runs cover \(total) blocks") }
                    segments.append(.composite(fingerprint: fp, runs: runs))
                default:
                    throw corrupt("bad segment tag")
                }
            }
            try r.expectEnd()
            return .leaf(segments)
        case innerTag:
            let height = Int(try r.u8())
            let count = Int(try r.u8())
            guard height >= 1, height <= 12, count <= StoreFormat.fanout else { throw corrupt("bad header") }
            var children: [BlobID?] = []
            for _ in 0..<count {
                switch try r.u8() {
                case 0: children.append(nil)
                case 1: children.append(try r.id())
                default: throw corrupt("bad child tag")
                }
            }
            try r.expectEnd()
            return .inner(height: height, children: children)
        default:
            throw corrupt("unknown node tag \(tag)")
        }
    }
}
