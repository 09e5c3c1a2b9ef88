public import LifeboatCore

/// The result of `verify`: what is damaged, and which recovery points it affects.
public struct VerifyReport: Sendable {
    public struct Affected: Sendable, Equatable {
        public var machine: String
        public var volume: String
        public var point: PointID
        public var time: Timestamp
        public var damagedBytes: Int64
        public var firstOffset: Int64
    }

    public var packsChecked = 0
    public var blobsChecked = 0
    public var bytesRead: Int64 = 0
    public var pointsChecked = 0
    /// One line per damaged object, naming it and what is wrong.
    public var problems: [String] = []
    public var affected: [Affected] = []
    /// Per machine, the newest point whose every volume reads back intact.
    public var cleanPoints: [String: PointID] = [:]

    public var isClean: Bool { problems.isEmpty }
}

extension Store {
    /// Reads and checks everything: every pack's header, footer and directory; with `readData`, every blob
    /// (decrypted, authenticated, decompressed, id recomputed); every commit's map. Never changes the store.
    public func verify(readData: Bool = true) throws -> VerifyReport {
        var report = VerifyReport()
        for d in damagedObjects {
            report.problems.append("\(d.kind.rawValue)/\(d.name): cannot be read: \(d.error)")
        }
        let groups = blobs.allEntriesByPack()
        let onDisk = Set(try backend.list(.pack))
        let results = ParallelSlots<(bad: [BlobID], problems: [String], bytes: Int64, blobs: Int)>(
            count: groups.count,
            initial: ([], [], 0, 0)
        )
        try parallelForEach(groups.count) { i in
            let group = groups[i]
            let name = hexString(group.name)
            var localBad: [BlobID] = []
            var localProblems: [String] = []
            var localBytes: Int64 = 0
            var localBlobs = 0
            defer { results[i] = (localBad, localProblems, localBytes, localBlobs) }
            guard onDisk.contains(name) else {
                localProblems.append("pack \(name) is missing (\(group.entries.count) blobs lost)")
                localBad = group.entries.map(\.id)
                return
            }
            do {
                let directory = try readPackDirectory(name)
                let listed = Set(directory.map(\.id))
                let missing = group.entries.filter { !listed.contains($0.id) }
                if !missing.isEmpty {
                    localProblems.append("pack \(name): its directory lacks \(missing.count) blob(s) the index names")
                }
            } catch {
                localProblems.append("pack \(name): \(error)")
            }
            guard readData else { return }
            for e in group.entries {
                localBlobs += 1
                localBytes += Int64(e.length)
                do {
                    let plain = try blobs.read(e.id, kind: e.kind)
                    if cipher.id(of: plain) != e.id {
                        throw LifeboatError("store.corrupt", "content does not match its id")
                    }
                } catch {
                    localBad.append(e.id)
                    let what = e.kind == .chunk ? "data chunk" : "map node"
                    localProblems.append("pack \(name) byte \(e.offset): \(what) \(e.id.short) is damaged (\((error as? LifeboatError)?.message ?? "\(error)"))")
                }
            }
        }
        var bad = Set<BlobID>()
        var problems: [String] = []
        for i in 0..<groups.count {
            let r = results[i]
            bad.formUnion(r.bad)
            problems += r.problems
            report.bytesRead += r.bytes
            report.blobsChecked += r.blobs
        }
        report.packsChecked = groups.count
        report.problems += problems.sorted()

        // Which points does the damage reach?
        let tree = VolumeTree(blobs: blobs, cipher: cipher)
        var nodeVerdicts: [BlobID: Bool] = [:]
        for commit in commits() {
            report.pointsChecked += 1
            var commitClean = true
            for volume in commit.volumes {
                var damagedBytes: Int64 = 0
                var firstOffset: Int64 = -1
                func mark(_ offset: Int64, _ length: Int64) {
                    guard offset < volume.size else { return }
                    damagedBytes += min(length, volume.size - offset)
                    if firstOffset < 0 || offset < firstOffset { firstOffset = offset }
                }
                func chunkOK(_ id: BlobID) -> Bool { !bad.contains(id) && blobs.contains(id) }
                func walk(_ id: BlobID?, height: Int, offset: Int64) {
                    guard let id else { return }
                    let span = StoreFormat.span(height: height)
                    let node: MapNode
                    do {
                        if nodeVerdicts[id] == false { throw LifeboatError("store.corrupt", "known damaged") }
                        node = try tree.loadNode(id)
                        nodeVerdicts[id] = true
                    } catch {
                        if nodeVerdicts[id] == nil {
                            report.problems.append("map node \(id.short) of \(commit.machine)/\(volume.name) cannot be read: \((error as? LifeboatError)?.message ?? "\(error)")")
                        }
                        nodeVerdicts[id] = false
                        mark(offset, span)
                        return
                    }
                    switch node {
                    case .inner(_, let children):
                        let childSpan = StoreFormat.span(height: height - 1)
                        for (i, child) in children.enumerated() {
                            walk(child, height: height - 1, offset: offset + Int64(i) * childSpan)
                        }
                    case .leaf(let segments):
                        let seg = Int64(StoreFormat.segmentSize)
                        for (s, entry) in segments.enumerated() {
                            let segOffset = offset + Int64(s) * seg
                            switch entry {
                            case .hole: break
                            case .whole(let c): if !chunkOK(c) { mark(segOffset, seg) }
                            case .composite(_, let runs):
                                var block: Int64 = 0
                                for r in runs {
                                    if let c = r.chunk, !chunkOK(c) {
                                        mark(segOffset + block * Int64(StoreFormat.blockSize), Int64(r.blocks) * Int64(StoreFormat.blockSize))
                                    }
                                    block += Int64(r.blocks)
                                }
                            }
                        }
                    }
                }
                walk(volume.root, height: volume.height, offset: 0)
                if damagedBytes > 0 {
                    commitClean = false
                    report.affected.append(
                        VerifyReport.Affected(
                            machine: commit.machine,
                            volume: volume.name,
                            point: commit.id,
                            time: commit.time,
                            damagedBytes: damagedBytes,
                            firstOffset: firstOffset
                        )
                    )
                }
            }
            if commitClean { report.cleanPoints[commit.machine] = commit.id }
        }
        return report
    }

    /// Reads and authenticates a pack's header, footer and directory.
    func readPackDirectory(_ name: String) throws -> [BlobEntry] {
        let reader = try backend.open(.pack, name)
        let size = reader.size
        guard size >= Int64(PackFormat.header.count + PackFormat.footerSize + BlobCipher.overhead) else {
            throw LifeboatError("store.corrupt", "is truncated (\(size) bytes)")
        }
        var head = [UInt8](repeating: 0, count: 8)
        _ = try head.withUnsafeMutableBytes { try reader.read(at: 0, into: $0) }
        guard head == PackFormat.header else { throw LifeboatError("store.corrupt", "has a bad header") }
        var foot = [UInt8](repeating: 0, count: PackFormat.footerSize)
        _ = try foot.withUnsafeMutableBytes { try reader.read(at: size - Int64(PackFormat.footerSize), into: $0) }
        guard Array(foot[4...]) == PackFormat.footerMagic else {
            throw LifeboatError("store.corrupt", "has no valid footer (truncated?)")
        }
        let dirLength = Int64(UInt32(foot[0]) | UInt32(foot[1]) << 8 | UInt32(foot[2]) << 16 | UInt32(foot[3]) << 24)
        guard dirLength <= size - Int64(PackFormat.footerSize + PackFormat.header.count) else {
            throw LifeboatError("store.corrupt", "has a bad directory length")
        }
        var sealed = [UInt8](repeating: 0, count: Int(dirLength))
        _ = try sealed.withUnsafeMutableBytes {
            try reader.read(at: size - Int64(PackFormat.footerSize) - dirLength, into: $0)
        }
        let plain = try cipher.open(sealed, kind: .packDirectory, context: Array(name.utf8))
        return try PackFormat.decodeDirectory(plain, pack: name)
    }
}
