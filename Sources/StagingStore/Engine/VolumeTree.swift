import LifeboatCore

/// Reading and building the copy-on-write map of one volume.
struct VolumeTree {
    let blobs: BlobRepository
    let cipher: BlobCipher

    func loadNode(_ id: BlobID) throws -> MapNode {
        try MapNode.decode(try blobs.read(id, kind: .node), id: id)
    }

    func loadLeaf(_ id: BlobID?) throws -> [SegmentEntry] {
        guard let id else { return Array(repeating: .hole, count: StoreFormat.segmentsPerLeaf) }
        guard case .leaf(var segments) = try loadNode(id) else {
            throw LifeboatError("store.corrupt", "map node \(id.short) should be a leaf")
        }
        while segments.count < StoreFormat.segmentsPerLeaf { segments.append(.hole) }
        return segments
    }

    /// The ids of all leaves of a volume, in order (nil for an all-hole leaf).
    func leafIDs(root: BlobID?, height: Int, size: Int64) throws -> [BlobID?] {
        let count = Int((size + Int64(StoreFormat.leafSpan) - 1) / Int64(StoreFormat.leafSpan))
        var out: [BlobID?] = []
        out.reserveCapacity(count)
        func walk(_ id: BlobID?, _ h: Int) throws {
            guard out.count < count else { return }
            if h == 0 {
                out.append(id)
                return
            }
            let span = Int(StoreFormat.span(height: h - 1) / Int64(StoreFormat.leafSpan))
            guard let id else {
                out.append(contentsOf: repeatElement(nil, count: min(span * StoreFormat.fanout, count - out.count)))
                return
            }
            guard case .inner(let nodeHeight, let children) = try loadNode(id), nodeHeight == h else {
                throw LifeboatError("store.corrupt", "map node \(id.short) should be an inner node of height \(h)")
            }
            for child in children {
                try walk(child, h - 1)
            }
            // Children past the end of a node are empty subtrees.
            let missing = StoreFormat.fanout - children.count
            if missing > 0, out.count < count {
                out.append(contentsOf: repeatElement(nil, count: min(span * missing, count - out.count)))
            }
        }
        try walk(root, height)
        while out.count < count { out.append(nil) }
        return out
    }

    /// Stores a node (deduplicated) and returns its id.
    func storeNode(_ node: MapNode, workspace ws: SegmentWorkspace) throws -> (BlobID, Int) {
        let bytes = node.encoded()
        let id = cipher.id(of: bytes)
        let stored = try bytes.withUnsafeBytes { (buf) throws -> Int in
            try blobs.store(id, kind: .node, plaintext: buf, compressor: ws.compressor, scratch: ws.scratch)
        }
        return (id, stored)
    }

    /// Builds the inner levels over a list of leaf ids; returns the root, the height and bytes stored.
    func build(leaves: [BlobID?], size: Int64, workspace ws: SegmentWorkspace) throws
        -> (root: BlobID?, height: Int, stored: Int)
    {
        let height = StoreFormat.height(for: max(size, 1))
        var level = leaves
        var stored = 0
        var h = 0
        while h < height {
            var next: [BlobID?] = []
            var i = 0
            while i < max(level.count, 1) {
                var children = Array(level[i..<min(i + StoreFormat.fanout, level.count)])
                while let last = children.last, last == nil { children.removeLast() }
                if children.isEmpty {
                    next.append(nil)
                } else {
                    let (id, n) = try storeNode(.inner(height: h + 1, children: children), workspace: ws)
                    stored += n
                    next.append(id)
                }
                i += StoreFormat.fanout
            }
            level = next
            h += 1
        }
        return (level.first ?? nil, height, stored)
    }
}
