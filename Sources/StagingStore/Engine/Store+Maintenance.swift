public import LifeboatCore
import LifeboatSystem
import Logging

/// Numbers about a store, for `lifeboat store stats`.
public struct StoreStatistics: Sendable {
    public var machines: Int
    public var points: Int
    public var packs: Int
    public var packBytes: Int64
    public var blobs: Int
    public var chunkRawBytes: Int64
    public var latestVolumeBytes: Int64
    public var metadataBytes: Int64
    /// Blobs stored plain on arrival, waiting for background compression (`compressDeferred`).
    public var deferredBlobs: Int
}

/// What `prune` did (or would do).
public struct PruneReport: Sendable {
    public var removed: [CommitRecord]
    public var kept: Int
    public var reclaimedBytes: Int64
    public var packsDeleted: Int
    public var packsRewritten: Int
}

extension Store {
    public func stats() throws -> StoreStatistics {
        let groups = blobs.allEntriesByPack()
        var packBytes: Int64 = 0
        let packNames = try backend.list(.pack)
        for name in packNames { packBytes += (try? backend.size(.pack, name)) ?? 0 }
        var metadata: Int64 = 0
        for kind in [ObjectKind.index, .commit, .pin] {
            for name in try backend.list(kind) { metadata += (try? backend.size(kind, name)) ?? 0 }
        }
        let machineNames = machines()
        let latestBytes = machineNames.compactMap { latest(machine: $0) }.reduce(Int64(0)) {
            $0 + $1.volumes.reduce(0) { $0 + $1.size }
        }
        return StoreStatistics(
            machines: machineNames.count,
            points: commits().count,
            packs: packNames.count,
            packBytes: packBytes,
            blobs: groups.reduce(0) { $0 + $1.entries.count },
            chunkRawBytes: groups.reduce(Int64(0)) { acc, g in
                acc + g.entries.reduce(Int64(0)) { $0 + Int64($1.rawLength) }
            },
            latestVolumeBytes: latestBytes,
            metadataBytes: metadata,
            deferredBlobs: blobs.deferredBlobCount
        )
    }

    /// Applies a retention policy: removes the commits it does not keep (never pinned ones, never a
    /// machine's newest), then collects garbage. Needs `.maintenance` access unless `dryRun`.
    public func prune(policy: RetentionPolicy, dryRun: Bool = false) throws -> PruneReport {
        try policy.validate()
        let now = clock.now()
        let pinned = pinnedPoints
        var removed: [CommitRecord] = []
        var kept = 0
        for machine in machines() {
            let mine = commits(machine: machine)
            let keep = policy.select(
                commits: mine.map { (id: $0.id, time: $0.time.seconds) },
                now: now.seconds,
                pinned: pinned
            )
            for c in mine {
                if keep.contains(c.id) { kept += 1 } else { removed.append(c) }
            }
        }
        var report = PruneReport(removed: removed, kept: kept, reclaimedBytes: 0, packsDeleted: 0, packsRewritten: 0)
        if dryRun { return report }
        guard access == .maintenance else {
            throw LifeboatError("store.needs-maintenance", "pruning needs the store opened for maintenance")
        }
        for c in removed { try backend.delete(.commit, c.id.description) }
        try backend.barrier()
        for c in removed { forgetCommit(c.id) }
        let gc = try collectGarbage()
        report.reclaimedBytes = gc.reclaimedBytes
        report.packsDeleted = gc.packsDeleted
        report.packsRewritten = gc.packsRewritten
        return report
    }

    /// Every blob reachable from a commit: map nodes and chunks.
    func reachableBlobs() throws -> Set<BlobID> {
        var reachable = Set<BlobID>()
        let tree = VolumeTree(blobs: blobs, cipher: cipher)
        func walk(_ id: BlobID) throws {
            guard reachable.insert(id).inserted else { return }
            switch try tree.loadNode(id) {
            case .inner(_, let children):
                for child in children { if let child { try walk(child) } }
            case .leaf(let segments):
                for s in segments {
                    switch s {
                    case .hole: break
                    case .whole(let c): reachable.insert(c)
                    case .composite(_, let runs): for r in runs { if let c = r.chunk { reachable.insert(c) } }
                    }
                }
            }
        }
        for c in commits() {
            for v in c.volumes {
                guard let root = v.root else { continue }
                do {
                    try walk(root)
                } catch {
                    throw LifeboatError(
                        "store.gc-blocked",
                        "garbage collection stopped: the map of machine '\(c.machine)' volume '\(v.name)' point \(c.id) cannot be read; run 'lifeboat store verify'",
                        cause: error
                    )
                }
            }
        }
        return reachable
    }

    struct GarbageReport {
        var reclaimedBytes: Int64
        var packsDeleted: Int
        var packsRewritten: Int
    }

    /// Deletes packs with no live blob, rewrites packs that are mostly garbage or small, and writes one
    /// consolidated index. Crash-safe: new packs and the new index are durable before anything old goes.
    func collectGarbage() throws -> GarbageReport {
        guard access == .maintenance else {
            throw LifeboatError("store.needs-maintenance", "garbage collection needs the store opened for maintenance")
        }
        let reachable = try reachableBlobs()
        let groups = blobs.allEntriesByPack()
        let indexed = Set(groups.map { hexString($0.name) })
        var packSizes: [String: Int64] = [:]
        for name in try backend.list(.pack) { packSizes[name] = try backend.size(.pack, name) }
        var deleteNames = packSizes.keys.filter { !indexed.contains($0) }  // orphans of failed commits
        var keptGroups: [(name: [UInt8], entries: [BlobEntry])] = []
        var rewrite: [(name: [UInt8], live: [BlobEntry])] = []
        for g in groups {
            let name = hexString(g.name)
            let live = g.entries.filter { reachable.contains($0.id) }
            if live.isEmpty {
                deleteNames.append(name)
                continue
            }
            let total = g.entries.reduce(0) { $0 + Int64($1.length) }
            let liveBytes = live.reduce(0) { $0 + Int64($1.length) }
            let small = (packSizes[name] ?? 0) < Int64(StoreFormat.packTargetSize / 4)
            if liveBytes * 5 < total * 4 || small {
                rewrite.append((g.name, live))
            } else {
                keptGroups.append((g.name, g.entries))
            }
        }
        // A lone small pack that is fully live is not worth rewriting.
        if rewrite.count == 1, rewrite[0].live.count == groups.first(where: { $0.name == rewrite[0].name })?.entries.count {
            keptGroups.append((rewrite[0].name, rewrite[0].live))
            rewrite = []
        }
        var newGroups: [(name: [UInt8], entries: [BlobEntry])] = []
        if !rewrite.isEmpty {
            for r in rewrite {
                for e in r.live {
                    guard let loc = blobs.location(of: e.id) else { continue }
                    try blobs.copySealed(try blobs.readSealed(loc, id: e.id), entry: e)
                }
            }
            newGroups = try blobs.sealCommit()
            try backend.barrier()  // the copies are durable before the index that names them
            deleteNames += rewrite.map { hexString($0.name) }
        }
        let finalGroups = keptGroups + newGroups
        let oldIndexFiles = try backend.list(.index)
        let indexName = hexString(SystemCalls.randomBytes(16))
        try backend.put(.index, indexName, try cipher.seal(IndexFormat.encode(finalGroups), kind: .indexFile, context: Array(indexName.utf8)))
        try backend.barrier()
        for name in oldIndexFiles { try backend.delete(.index, name) }
        try backend.barrier()
        var reclaimed: Int64 = 0
        for name in deleteNames {
            reclaimed += packSizes[name] ?? 0
            try backend.delete(.pack, name)
        }
        try backend.barrier()
        for g in newGroups { reclaimed -= (try? backend.size(.pack, hexString(g.name))) ?? 0 }
        blobs.replaceAll(with: finalGroups)
        logger.info(
            "garbage collected",
            metadata: ["reclaimed": "\(reclaimed)", "deleted": "\(deleteNames.count)", "rewritten": "\(rewrite.count)"]
        )
        return GarbageReport(reclaimedBytes: reclaimed, packsDeleted: deleteNames.count, packsRewritten: rewrite.count)
    }
}
