#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Dispatch
import LifeboatCore
import LifeboatSystem
import Logging

/// What one pass of background compression did.
public struct CompactionReport: Sendable, Equatable {
    /// Packs whose blobs were copied into new packs (the old ones are retired).
    public var packsRewritten = 0
    /// Deferred blobs handled, and how many of them are stored compressed now (the rest do not compress).
    public var deferredBlobs = 0
    public var compressedBlobs = 0
    /// Stored bytes of the rewritten packs' blobs before and after.
    public var bytesBefore: Int64 = 0
    public var bytesAfter: Int64 = 0
    /// Retired packs deleted in this pass.
    public var packsDeleted = 0

    public init() {}
}

extension Store {
    /// How long a retired pack stays on disk: a reader that looked a blob up just before the copy (this process)
    /// or opened the store before it (`lifeboat export`, NBD in another process) can still read it meanwhile.
    public static let retiredPackGrace: Duration = .seconds(600)

    /// Number of blobs stored plain on arrival and not yet compressed.
    public var deferredBlobCount: Int { blobs.deferredBlobCount }

    /// True while retired packs wait for their grace period to end.
    public var hasRetiredPacks: Bool { stateLock.withLock { !retiredPacks.isEmpty } }

    /// Background compression: replication lands chunks plain when compressing them would have slowed the
    /// transfer (`CommitBuilder.prepareSegment(content:)`); this compresses them afterwards. Takes the store's
    /// commit turn (`store.commit-in-progress` while a commit runs), copies every blob of up to `packLimit` packs
    /// that hold deferred blobs into new packs — deferred ones compressed on all cores (kept plain when zstd does
    /// not save 1/32), the others as they are — writes the index file that names the new packs, and retires the
    /// old packs. Retired packs are deleted by a later pass once `grace` has passed.
    ///
    /// Crash-safe: the new packs and their index file are durable before the old packs are retired; a blob listed
    /// in two index files is read from the copy that is not deferred (`loadMetadata`), and packs whose every blob
    /// was copied are retired again at the next open.
    public func compressDeferred(packLimit: Int = 1, grace: Duration = Store.retiredPackGrace) throws -> CompactionReport {
        try requireWrite()
        try takeCommitTurn()
        defer { endCommit() }
        var report = CompactionReport()
        report.packsDeleted = try deleteRetiredPacks(olderThan: grace)
        let groups = blobs.packsWithDeferredBlobs(limit: packLimit)
        guard !groups.isEmpty else { return report }
        var written: [(name: [UInt8], entries: [BlobEntry])] = []
        do {
            for group in groups {
                for (original, (entry, sealed)) in zip(group.entries, try recode(group.entries)) {
                    try blobs.copySealed(sealed, entry: entry)
                    report.bytesBefore += Int64(original.length)
                    report.bytesAfter += Int64(sealed.count)
                    if original.deferred {
                        report.deferredBlobs += 1
                        if entry.compressed { report.compressedBlobs += 1 }
                    }
                }
            }
            written = try blobs.sealCommit()
            try writeIndexFile(for: written)
        } catch {
            // No durable index names the copies: forget them (nothing may deduplicate against them), which forgets
            // the blobs' only locations too — put the originals back.
            blobs.abandonCommit()
            blobs.forget(written)
            for group in groups { blobs.register(pack: group.name, entries: group.entries) }
            throw error
        }
        let now = ContinuousClock.now
        stateLock.withLock { for group in groups { retiredPacks.append((hexString(group.name), now)) } }
        report.packsRewritten = groups.count
        logger.info(
            "compressed deferred blobs",
            metadata: [
                "packs": "\(groups.count)", "blobs": "\(report.deferredBlobs)", "compressed": "\(report.compressedBlobs)",
                "before": "\(report.bytesBefore)", "after": "\(report.bytesAfter)", "new-packs": "\(written.count)",
            ]
        )
        return report
    }

    /// The blobs of one pack, sealed again: deferred ones opened, compressed and sealed (on all cores), the
    /// others as stored. Entries keep their order.
    private func recode(_ entries: [BlobEntry]) throws -> [(BlobEntry, [UInt8])] {
        let sealed = try entries.map { (entry) throws -> [UInt8] in
            guard let location = blobs.location(of: entry.id) else {
                throw LifeboatError("store.missing-blob", "blob \(entry.id.short) left the index during compression")
            }
            return try blobs.readSealed(location, id: entry.id)
        }
        let results = ResultSlots<(BlobEntry, [UInt8])>(count: entries.count)
        let workspaces = WorkspacePool()
        DispatchQueue.concurrentPerform(iterations: entries.count) { i in
            results.set(i) {
                var entry = entries[i]
                guard entry.deferred else { return (entry, sealed[i]) }
                return try workspaces.withWorkspace { ws in
                    let plain = try cipher.open(sealed[i], kind: entry.kind, context: entry.id.bytes)
                    entry.deferred = false
                    let compressedLength = plain.withUnsafeBytes { ws.compressor.compress($0, into: ws.scratch) }
                    guard let compressedLength else { return (entry, sealed[i]) }
                    entry.compressed = true
                    let body = UnsafeRawBufferPointer(rebasing: ws.scratch[0..<compressedLength])
                    return (entry, Array(try cipher.seal(body, kind: entry.kind, context: entry.id.bytes)))
                }
            }
        }
        return try results.values()
    }

    /// Deletes retired packs older than `grace`. Returns how many went.
    private func deleteRetiredPacks(olderThan grace: Duration) throws -> Int {
        let now = ContinuousClock.now
        let due = stateLock.withLock { retiredPacks.filter { now - $0.since >= grace }.map(\.name) }
        guard !due.isEmpty else { return 0 }
        for name in due where (try? backend.size(.pack, name)) != nil { try backend.delete(.pack, name) }
        try backend.barrier()
        // Cached open readers would keep the deleted files' space; the others reopen on their next read.
        blobs.dropReaders()
        stateLock.withLock { retiredPacks.removeAll { due.contains($0.name) } }
        return due.count
    }
}

/// Results of a `concurrentPerform`, one slot per iteration; the first error wins.
private final class ResultSlots<T>: @unchecked Sendable {
    private let lock = PlainLock()
    private var slots: [Result<T, any Error>?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ body: () throws -> T) {
        let result = Result { try body() }
        lock.withLock { slots[index] = result }
    }

    func values() throws -> [T] {
        try lock.withLock { try slots.map { try $0!.get() } }
    }
}
