import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

@Suite("Resetting a volume and the capture time of a commit")
struct ResetTests {
    @Test("reset makes a volume all zeros before its extents, whatever the parent held, and may shrink it")
    func resetStartsFromEmpty() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        var rng = SeededRandom(seed: 12)
        let old = rng.bytes(3 * MiB)
        let first = try store.beginCommit(machine: "vm-1")
        try first.setSize(volume: "disk", size: Int64(old.count))
        try old.withUnsafeBytes { try first.write(volume: "disk", offset: 0, bytes: $0) }
        try first.setSize(volume: "other", size: 8192)
        try [UInt8](repeating: 9, count: 8192).withUnsafeBytes { try first.write(volume: "other", offset: 0, bytes: $0) }
        _ = try first.commit()

        // The sender lost its tracking state: a fresh initial sync of a smaller disk with one non-zero extent.
        let size = 2 * MiB + 100
        var model = [UInt8](repeating: 0, count: size)
        let fresh = rng.bytes(65536)
        model.replaceSubrange(MiB..<(MiB + 65536), with: fresh)
        let second = try store.beginCommit(machine: "vm-1")
        try second.reset(volume: "disk", size: Int64(size))
        try fresh.withUnsafeBytes { try second.write(volume: "disk", offset: Int64(MiB), bytes: $0) }
        // A reset volume that receives nothing is all zeros.
        try second.reset(volume: "other", size: 4096)
        let record = try second.commit()

        #expect(record.volumes.first { $0.name == "disk" }?.size == Int64(size))
        #expect(try f.exported(store, machine: "vm-1", volume: "disk", point: "latest") == model)
        #expect(try f.exported(store, machine: "vm-1", volume: "other", point: "latest") == [UInt8](repeating: 0, count: 4096))
        // The parent is untouched.
        #expect(try f.exported(store, machine: "vm-1", volume: "disk", point: record.parent!.description) == old)
        let report = try store.verify()
        #expect(report.problems.isEmpty)
    }

    @Test("a commit is stamped with its capture time, never before its parent and never in the future")
    func captureTime() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        f.clock.advance(seconds: 3600)
        let before = f.clock.now()
        let first = try store.beginCommit(machine: "vm-1")
        try first.setSize(volume: "disk", size: 4096)
        first.captureTime = Timestamp(nanoseconds: before.nanoseconds - 5_000_000_000)
        let a = try first.commit()
        #expect(a.time == Timestamp(nanoseconds: before.nanoseconds - 5_000_000_000))

        let second = try store.beginCommit(machine: "vm-1")
        second.captureTime = Timestamp(nanoseconds: before.nanoseconds - 9_000_000_000)  // before the parent
        let b = try second.commit()
        #expect(b.time > a.time)

        let third = try store.beginCommit(machine: "vm-1")
        third.captureTime = Timestamp(nanoseconds: before.nanoseconds + 3_600_000_000_000)  // future
        let c = try third.commit()
        #expect(c.time == before)
    }
}

@Suite("Crash consistency and source epochs in commit records")
struct ConsistencyFlagTests {
    @Test("a commit that is not crash-consistent is kept but never offered as latest or by time; its id still reads it")
    func inconsistentNotOffered() throws {
        let f = try StoreFixture()
        var store = try f.open(.write)
        let first = try store.beginCommit(machine: "vm-1")
        try first.setSize(volume: "disk", size: 8192)
        try [UInt8](repeating: 1, count: 8192).withUnsafeBytes { try first.write(volume: "disk", offset: 0, bytes: $0) }
        try first.setSourceEpoch(volume: "disk", epoch: 7)
        let good = try first.commit()
        f.clock.advance(seconds: 10)
        let second = try store.beginCommit(machine: "vm-1")
        try [UInt8](repeating: 2, count: 4096).withUnsafeBytes { try second.write(volume: "disk", offset: 0, bytes: $0) }
        second.crashConsistent = false
        try second.setSourceEpoch(volume: "disk", epoch: 9)
        let torn = try second.commit()

        // Reopened: the flags and epochs survive.
        store.close()
        store = try f.open(.read)
        #expect(store.commit(torn.id)?.crashConsistent == false)
        #expect(store.commit(good.id)?.volumes.first?.sourceEpoch == 7)
        #expect(store.commit(torn.id)?.volumes.first?.sourceEpoch == 9)
        #expect(store.latest(machine: "vm-1")?.id == torn.id)  // the parent of the next commit
        #expect(try store.resolvePoint("latest", machine: "vm-1").id == good.id)
        #expect(try store.resolvePoint(Timestamp.now().rfc3339, machine: "vm-1").id == good.id)
        #expect(try store.resolvePoint(torn.id.description, machine: "vm-1").id == torn.id)
        store.close()
    }

    @Test("a machine with only torn commits has no latest point: a clear error")
    func onlyTorn() throws {
        let f = try StoreFixture()
        let store = try f.open(.write)
        let b = try store.beginCommit(machine: "vm-2")
        try b.setSize(volume: "disk", size: 4096)
        b.crashConsistent = false
        _ = try b.commit()
        expectError("store.no-consistent-point") { _ = try store.resolvePoint("latest", machine: "vm-2") }
    }
}
