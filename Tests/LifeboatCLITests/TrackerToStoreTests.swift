import ChangeTracking
import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

/// The agent's data path without the network: a scan tracker's change sets written as extents into the
/// staging store, commit after commit, acknowledged only after the commit is durable. Every point must
/// equal the image as it was collected.
@Suite struct TrackerToStoreTests {
    /// Writes one change set into a commit and commits it.
    func replicate(_ changes: ChangeSet, from tracker: ScanTracker, into store: Store) throws -> CommitRecord {
        let builder = try store.beginCommit(machine: "src")
        do {
            try builder.setSize(volume: "disk", size: changes.volumeSize)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { buffer.deallocate() }
            for extent in changes.extents {
                var offset = extent.offset
                while offset < extent.end {
                    let piece = ChangedExtent(offset: offset, length: min(1 << 20, extent.end - offset))
                    try tracker.read(piece, epoch: changes.epoch, into: buffer)
                    try builder.write(
                        volume: "disk",
                        offset: piece.offset,
                        bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<Int(piece.length)])
                    )
                    offset = piece.end
                }
            }
            return try builder.commit()
        } catch {
            builder.abandon()
            throw error
        }
    }

    @Test func changeSetsBecomeExactRecoveryPoints() throws {
        let dir = try TemporaryDirectory()
        let image = dir.child("disk.img")
        let size = 8 << 20 + 1234
        try FileTools.write(image, TestImage.mixed(size: size, seed: 7))
        let backend = LocalDirectoryBackend(root: dir.child("store"))
        let key = MasterKeySource.keyFile(path: dir.child("store.key"))
        try Store.create(at: backend, key: key)
        let store = try Store.open(backend, key: key, access: .write)
        defer { store.close() }
        try FileTools.makeDirectory(dir.child("state"))
        var tracker: ScanTracker? = try ScanTracker(volume: "disk", path: image, stateDirectory: dir.child("state"))
        var rng = SeededRandom(seed: 99)
        var lastAcknowledged: UInt64 = 0
        for round in 0..<6 {
            if round > 0 {
                for _ in 0..<Int.random(in: 1...40, using: &rng) {
                    let block = Int64.random(in: 0..<Int64(size / 4096), using: &rng) * 4096
                    let bytes = round % 3 == 0 ? [UInt8](repeating: 0, count: 4096) : (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
                    try FileTools.write(image, bytes, at: block)
                }
            }
            if round == 4 {
                // A restart between rounds: a new tracker instance picks up the acknowledged state.
                tracker = nil
                tracker = try ScanTracker(volume: "disk", path: image, stateDirectory: dir.child("state"))
            }
            let changes = try tracker!.collect()
            #expect(changes.baseEpoch == lastAcknowledged, "round \(round)")
            if round == 0 { #expect(changes.reason == .initialSync) }
            let record = try replicate(changes, from: tracker!, into: store)
            try tracker!.acknowledge(epoch: changes.epoch)
            lastAcknowledged = changes.epoch
            // What the store says changed is never more than what the tracker reported.
            #expect(Int64(record.changedBytes) <= changes.changedBytes)
            let reader = try store.reader(machine: "src", volume: "disk", point: record.id.description)
            try store.export(reader, to: dir.child("out.raw"))
            #expect(try FileTools.read(dir.child("out.raw")) == FileTools.read(image), "round \(round)")
        }
        // Nothing changed: an empty change set, and a commit of it changes nothing.
        let idle = try tracker!.collect()
        #expect(idle.isEmpty)
        #expect(try replicate(idle, from: tracker!, into: store).changedBytes == 0)
        try tracker!.acknowledge(epoch: idle.epoch)
        #expect(try store.verify().isClean)
    }
}
