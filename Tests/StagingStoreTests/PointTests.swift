import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

@Suite("Recovery points")
struct PointTests {
    @Test("every earlier commit still exports exactly its own state")
    func everyCommitReadable() throws {
        let f = try StoreFixture()
        let size = 8 * MiB + 4096 + 10
        var rng = SeededRandom(seed: 3)
        var state = TestImage.mixed(size: size, seed: 3)
        let path = try f.writeImage("disk.img", state)
        let store = try f.open(.write)

        var states: [[UInt8]] = []
        var commits: [CommitRecord] = []
        for round in 0..<6 {
            if round > 0 {
                switch round % 3 {
                case 1:
                    // Scattered 4 KiB writes.
                    for _ in 0..<40 {
                        let b = rng.below(size / blockSize)
                        state.replaceSubrange((b * blockSize)..<((b + 1) * blockSize), with: rng.bytes(blockSize))
                    }
                case 2:
                    // Zero a region that crosses a 4 MiB boundary, and rewrite the tail.
                    let from = 4 * MiB - 3 * 65536
                    state.replaceSubrange(from..<(from + 6 * 65536), with: [UInt8](repeating: 0, count: 6 * 65536))
                    state.replaceSubrange((size - 5000)..<size, with: rng.bytes(5000))
                default:
                    // A whole 64 KiB segment of compressible text and a few bytes inside a block.
                    var text = ArraySlice([UInt8](repeating: 0, count: 65536))
                    TestImage.fillText(&text, rng: &rng)
                    let s = rng.below(size / 65536)
                    state.replaceSubrange((s * 65536)..<((s + 1) * 65536), with: text)
                    state[12345] ^= 0xFF
                }
                try FileTools.write(path, state)
            }
            f.clock.advance(seconds: 60)
            commits.append(try store.ingest(machine: "app", volumes: [(name: "disk", path: path)]))
            states.append(state)
        }

        #expect(store.commits(machine: "app") == commits)
        #expect(commits.map(\.sequence) == Array(1...6))
        #expect(commits.dropFirst().map(\.parent) == commits.dropLast().map(\.id))
        for (i, c) in commits.enumerated() {
            expectSameBytes(try f.exported(store, machine: "app", volume: "disk", point: c.id.description), states[i], "state \(i)")
        }
        store.close()

        // The same from a read-only open, through the reader.
        let ro = try f.open(.read)
        for (i, c) in commits.enumerated() {
            let reader = try ro.reader(machine: "app", volume: "disk", point: c.id.description)
            expectSameBytes(try read(reader, at: 0, count: size), states[i], "read of state \(i)")
        }
        ro.close()
    }

    @Test("points resolve by id, latest and time; bad points fail with clear codes")
    func resolvePoints() throws {
        let f = try StoreFixture()
        let path = try f.writeImage("disk.img", TestImage.mixed(size: 1 * MiB, seed: 31))
        let store = try f.open(.write)
        var commits: [CommitRecord] = []
        for i in 0..<4 {
            f.clock.advance(seconds: 600)
            try FileTools.write(path, [UInt8(i + 1)], at: 0)
            commits.append(try store.ingest(machine: "alpha", volumes: [(name: "disk", path: path)]))
        }
        f.clock.advance(seconds: 600)
        let other = try store.ingest(machine: "beta", volumes: [(name: "disk", path: path)])

        // Commit times come from the clock.
        #expect(commits[0].time == Timestamp(seconds: StoreFixture.defaultStart.seconds + 600))
        #expect(commits.map(\.time) == commits.map(\.time).sorted())

        #expect(try store.resolvePoint("latest", machine: "alpha") == commits[3])
        #expect(try store.resolvePoint("latest", machine: "beta") == other)
        for c in commits {
            #expect(try store.resolvePoint(c.id.description, machine: "alpha") == c)
            // Exactly at its time, and anywhere before the next one.
            #expect(try store.resolvePoint(c.time.rfc3339, machine: "alpha") == c)
            let later = Timestamp(nanoseconds: c.time.nanoseconds + 599 * 1_000_000_000)
            #expect(try store.resolvePoint(later.rfc3339, machine: "alpha") == c)
        }
        // Just before the second commit is the first; far in the future is the newest.
        let justBefore = Timestamp(nanoseconds: commits[1].time.nanoseconds - 1_000_000)
        #expect(try store.resolvePoint(justBefore.rfc3339, machine: "alpha") == commits[0])
        #expect(try store.resolvePoint("2099-01-01T00:00:00Z", machine: "alpha") == commits[3])
        // Another time zone names the same instant.
        let t2 = commits[2].time.rfc3339  // ...T00:30:00.000Z
        let plusTwo = String(t2.prefix(11)) + "02" + String(t2.dropFirst(13).dropLast()) + "+02:00"
        #expect(Timestamp(rfc3339: plusTwo) == commits[2].time)
        #expect(try store.resolvePoint(plusTwo, machine: "alpha") == commits[2])

        // Before the oldest point.
        let early = Timestamp(nanoseconds: commits[0].time.nanoseconds - 1_000_000_000).rfc3339
        let e1 = expectError("store.unknown-point") { _ = try store.resolvePoint(early, machine: "alpha") }
        #expect(e1?.message.contains("alpha") == true)
        // An id that does not exist, or belongs to another machine.
        expectError("store.unknown-point") { _ = try store.resolvePoint("00000000000000fe", machine: "alpha") }
        expectError("store.unknown-point") { _ = try store.resolvePoint(other.id.description, machine: "alpha") }
        expectError("store.unknown-point") { _ = try store.reader(machine: "alpha", volume: "disk", point: other.id.description) }
        // Not a point at all.
        for text in ["yesterday", "", "12345", "2026-13-01T00:00:00Z", "2026-01-01", "LATEST", "0123456789abcdefg"] {
            expectError("store.bad-point") { _ = try store.resolvePoint(text, machine: "alpha") }
        }
        // A machine the store does not know.
        let e2 = expectError("store.unknown-machine") { _ = try store.resolvePoint("latest", machine: "gamma") }
        #expect(e2?.message.contains("gamma") == true)
        expectError("store.unknown-machine") { _ = try store.reader(machine: "gamma", volume: "disk", point: "latest") }
        store.close()
    }

    @Test("several volumes commit together; a later commit of one volume keeps the others")
    func multiVolumeCommit() throws {
        let f = try StoreFixture()
        let rootImage = TestImage.mixed(size: 6 * MiB, seed: 41)
        var dataImage = TestImage.mixed(size: 3 * MiB + 100, seed: 42)
        let rootPath = try f.writeImage("root.img", rootImage)
        let dataPath = try f.writeImage("data.img", dataImage)
        let store = try f.open(.write)

        let first = try store.ingest(machine: "db-1", volumes: [(name: "root", path: rootPath), (name: "data", path: dataPath)])
        #expect(first.volumes.map(\.name) == ["root", "data"])
        #expect(first.volumes.map(\.size) == [Int64(6 * MiB), Int64(3 * MiB + 100)])

        var rng = SeededRandom(seed: 43)
        dataImage.replaceSubrange(8192..<(8192 + 3 * blockSize), with: rng.bytes(3 * blockSize))
        try FileTools.write(dataPath, dataImage)
        f.clock.advance(seconds: 30)
        let second = try store.ingest(machine: "db-1", volumes: [(name: "data", path: dataPath)])
        #expect(second.volumes.map(\.name) == ["root", "data"])
        #expect(second.volumes[0] == first.volumes[0], "the untouched volume keeps its state")
        #expect(second.volumes[1] != first.volumes[1])
        #expect(second.changedBytes == UInt64(3 * blockSize))

        let id1 = first.id.description, id2 = second.id.description
        expectSameBytes(try f.exported(store, machine: "db-1", volume: "root", point: id2), rootImage, "root at second")
        expectSameBytes(try f.exported(store, machine: "db-1", volume: "data", point: id2), dataImage, "data at second")
        expectSameBytes(try f.exported(store, machine: "db-1", volume: "root", point: id1), rootImage, "root at first")
        expectSameBytes(try f.exported(store, machine: "db-1", volume: "data", point: id1), TestImage.mixed(size: 3 * MiB + 100, seed: 42), "data at first")

        // A commit that fails on its second volume leaves nothing: no commit, same latest, store usable.
        let changed = TestImage.mixed(size: 6 * MiB, seed: 44)
        try FileTools.write(rootPath, changed)
        expectError("io.not-found") {
            _ = try store.ingest(machine: "db-1", volumes: [(name: "root", path: rootPath), (name: "data", path: f.path("missing.img"))])
        }
        #expect(store.commits(machine: "db-1") == [first, second])
        expectSameBytes(try f.exported(store, machine: "db-1", volume: "root", point: "latest"), rootImage, "root after failed commit")
        // The same volume twice is refused before anything is read.
        expectError("store.duplicate-volume") {
            _ = try store.ingest(machine: "db-1", volumes: [(name: "root", path: rootPath), (name: "root", path: dataPath)])
        }
        let third = try store.ingest(machine: "db-1", volumes: [(name: "root", path: rootPath)])
        #expect(third.parent == second.id)
        expectSameBytes(try f.exported(store, machine: "db-1", volume: "root", point: "latest"), changed, "root after retry")
        expectSameBytes(try f.exported(store, machine: "db-1", volume: "data", point: "latest"), dataImage, "data after retry")
        store.close()

        // Everything the retried commit refers to is indexed on disk, not only known in memory.
        let reopened = try f.open(.read)
        #expect(reopened.commits(machine: "db-1") == [first, second, third])
        expectSameBytes(try f.exported(reopened, machine: "db-1", volume: "root", point: "latest"), changed, "root after reopen")
        #expect(try reopened.verify().isClean)
        reopened.close()
    }

    @Test("commit times increase even when the clock stands still or goes back")
    func monotonicTimes() throws {
        let f = try StoreFixture()
        let path = try f.writeImage("disk.img", TestImage.mixed(size: 256 * 1024, seed: 33))
        let store = try f.open(.write)
        let c1 = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])
        let c2 = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])  // same clock reading
        f.clock.advance(seconds: -3600)  // the clock jumps back an hour
        let c3 = try store.ingest(machine: "m", volumes: [(name: "v", path: path)])
        #expect(c1.time < c2.time && c2.time < c3.time)
        #expect(c3.time < Timestamp(nanoseconds: c1.time.nanoseconds + 1_000_000_000))
        #expect(store.commits(machine: "m") == [c1, c2, c3])
        #expect(try store.resolvePoint("latest", machine: "m") == c3)
        // Nanoseconds apart, the three show the same millisecond: a written time covers its whole millisecond (a
        // time copied from a listing must find its point), so it names the newest of them; ids tell them apart.
        #expect(try store.resolvePoint(c1.time.rfc3339, machine: "m") == c3)
        // Written to the nanosecond, the same instant is the first one exactly.
        let fraction = String(c1.time.nanoseconds % 1_000_000_000)
        let exact = String(c1.time.rfc3339.prefix(20)) + String(repeating: "0", count: 9 - fraction.count) + fraction + "Z"
        #expect(try store.resolvePoint(exact, machine: "m") == c1)
        #expect(try store.resolvePoint(Timestamp(nanoseconds: c1.time.nanoseconds + 1_000_000).rfc3339, machine: "m") == c3)
        store.close()
    }
}
