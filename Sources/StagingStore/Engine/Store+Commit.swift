import LifeboatCore
import LifeboatSystem
import Logging

extension Store {
    /// Starts a commit for a machine. One commit at a time per store; finish it with `commit()` or `abandon()`.
    public func beginCommit(machine: String) throws -> CommitBuilder {
        try requireWrite()
        try Names.validate(machine, kind: "machine")
        try takeCommitTurn()
        return CommitBuilder(store: self, machine: machine, parent: latest(machine: machine))
    }

    /// Convenience: one commit that takes each file as the new state of the named volume.
    public func ingest(machine: String, volumes: [(name: String, path: String)]) throws -> CommitRecord {
        var seen = Set<String>()
        for v in volumes where !seen.insert(v.name).inserted {
            throw LifeboatError("store.duplicate-volume", "volume '\(v.name)' is given twice")
        }
        let builder = try beginCommit(machine: machine)
        do {
            for v in volumes { try builder.scan(volume: v.name, path: v.path) }
            return try builder.commit()
        } catch {
            builder.abandon()
            throw error
        }
    }

    /// The store's one writer turn (commits, background compression); give it back with `endCommit()`.
    func takeCommitTurn() throws {
        let busy = stateLock.withLock { () -> Bool in
            if commitInProgress { return true }
            commitInProgress = true
            return false
        }
        guard !busy else {
            throw LifeboatError("store.commit-in-progress", "another commit is in progress in this store")
        }
    }

    /// Makes written packs durable, then the index file that names them (a later commit may deduplicate against
    /// any indexed blob, so no index may name a pack that is not on stable storage).
    func writeIndexFile(for written: [(name: [UInt8], entries: [BlobEntry])]) throws {
        try backend.barrier()
        let name = hexString(SystemCalls.randomBytes(16))
        try backend.put(.index, name, try cipher.seal(IndexFormat.encode(written), kind: .indexFile, context: Array(name.utf8)))
        try backend.barrier()
    }

    func endCommit() {
        stateLock.withLock { commitInProgress = false }
    }

    /// Writes the index file and then the commit record, each made durable before the next step.
    func finishCommit(
        machine: String,
        parent: CommitRecord?,
        time: Timestamp?,
        crashConsistent: Bool,
        volumes: [VolumeState],
        changedBytes: UInt64,
        storedBytes: UInt64
    ) throws -> CommitRecord {
        defer { endCommit() }
        let written = try blobs.sealCommit()
        let record: CommitRecord
        do {
            // The index before the commit that refers to its blobs.
            if !written.isEmpty { try writeIndexFile(for: written) }
            var now = time.map { min($0, clock.now()) } ?? clock.now()
            if let parent, now <= parent.time { now = Timestamp(nanoseconds: parent.time.nanoseconds + 1) }
            record = CommitRecord(
                id: PointID.random(),
                machine: machine,
                sequence: (parent?.sequence ?? 0) + 1,
                time: now,
                parent: parent?.id,
                volumes: volumes,
                changedBytes: changedBytes,
                storedBytes: storedBytes,
                crashConsistent: crashConsistent
            )
            let name = record.id.description
            try backend.put(.commit, name, try cipher.seal(record.encoded(), kind: .commit, context: Array(name.utf8)))
            try backend.barrier()
        } catch {
            // Nothing refers to these blobs and no index file may name them: forget them, so that no later
            // commit of this process deduplicates against them.
            blobs.forget(written)
            throw error
        }
        recordCommit(record)
        logger.info(
            "commit",
            metadata: [
                "machine": "\(machine)", "point": "\(record.id)", "changed": "\(changedBytes)", "stored": "\(storedBytes)",
            ]
        )
        return record
    }
}
