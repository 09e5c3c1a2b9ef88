import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

private let minute: Int64 = 60
private let hour: Int64 = 3600
private let day: Int64 = 86400

/// A commit the simulation made: its id, time (seconds since the epoch) and the block only it has.
private struct Made {
    let id: PointID
    let time: Int64
    let block: [UInt8]
}

private func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

@Suite("Retention and garbage collection")
struct RetentionTests {
    @Test("two weeks of commits, pruned as they go, keep exactly what the default policy promises")
    func twoWeeksOfCommits() throws {
        let f = try StoreFixture()
        let start = StoreFixture.defaultStart.seconds  // a midnight
        let machine = "app-1"
        let volume = "disk"
        let size = 256 * KiB
        var rng = SeededRandom(seed: 9)
        let base = rng.bytes(size)
        var made: [Made] = []
        var pinned = Set<PointID>()
        var store = try f.open(.write)
        var prunes = 0
        var removedTotal = 0

        // Each commit replaces block 0 with fresh random data: that block belongs to that point alone.
        func state(of m: Made) -> [UInt8] {
            var s = base
            s.replaceSubrange(0..<blockSize, with: m.block)
            return s
        }

        func makeCommit() throws {
            let builder = try store.beginCommit(machine: machine)
            if made.isEmpty {
                try builder.setSize(volume: volume, size: Int64(size))
                try base.withUnsafeBytes { try builder.write(volume: volume, offset: 0, bytes: $0) }
            }
            let block = rng.bytes(blockSize)
            try block.withUnsafeBytes { try builder.write(volume: volume, offset: 0, bytes: $0) }
            let c = try builder.commit()
            #expect(c.time == f.clock.now())
            made.append(Made(id: c.id, time: c.time.seconds, block: block))
        }

        func checkExports(_ s: Store, kept: Set<PointID>, viaExport: Bool) throws {
            for m in made where kept.contains(m.id) {
                let got: [UInt8]
                if viaExport {
                    got = try f.exported(s, machine: machine, volume: volume, point: m.id.description)
                } else {
                    got = try read(try s.reader(machine: machine, volume: volume, point: m.id.description), at: 0, count: size)
                }
                if got != state(of: m) {
                    Issue.record("point \(m.id) made at +\(m.time - start)s does not read back its state")
                }
            }
        }

        /// What the default policy promises about the kept set at time `now`.
        func checkPolicy(now: Int64, kept: Set<PointID>) {
            let newest = made.last!.id
            #expect(kept.contains(newest), "the newest point is kept")
            for p in pinned { #expect(kept.contains(p), "pinned point \(p) is kept") }
            for m in made where now - m.time < 10 * minute {
                #expect(kept.contains(m.id), "point of age \(now - m.time)s (younger than 10 min) is kept")
            }
            let ruled = made.filter { kept.contains($0.id) && !pinned.contains($0.id) && $0.id != newest }
            // At most one point per bucket in each band of ages.
            for (band, bucket) in [(10 * minute..<hour, 10 * minute), (hour..<day, hour), (day..<(7 * day), day)] {
                var seen: [Int64: Made] = [:]
                for m in ruled where band.contains(now - m.time) {
                    let b = floorDiv(m.time, bucket)
                    if let other = seen[b] {
                        Issue.record("two points kept in one \(bucket)s bucket: ages \(now - other.time)s and \(now - m.time)s")
                    }
                    seen[b] = m
                }
            }
            for m in ruled where now - m.time >= 7 * day {
                Issue.record("point of age \(now - m.time)s (over 7 days, not pinned, not newest) was kept")
            }
            // The first point made in each bucket is kept while the bucket is inside its rule's window.
            for (window, bucket) in [(hour, 10 * minute), (day, hour), (7 * day, day)] {
                var firsts: [Int64: Made] = [:]
                for m in made where firsts[floorDiv(m.time, bucket)] == nil { firsts[floorDiv(m.time, bucket)] = m }
                for m in firsts.values where now - m.time < window {
                    #expect(kept.contains(m.id), "first point of its \(bucket)s bucket, age \(now - m.time)s, is kept")
                }
            }
        }

        func pruneAndCheck(now: Int64, verify: Bool) throws {
            store.close()
            let m = try f.open(.maintenance)
            let before = Set(m.commits(machine: machine).map(\.id))
            let dry = try m.prune(policy: .default, dryRun: true)
            #expect(Set(m.commits(machine: machine).map(\.id)) == before, "a dry run removes nothing")
            let bytesBefore = try f.files.totalBytes()
            let report = try m.prune(policy: .default)
            let bytesAfter = try f.files.totalBytes()
            let removed = Set(report.removed.map(\.id))
            let kept = Set(m.commits(machine: machine).map(\.id))
            #expect(removed == Set(dry.removed.map(\.id)), "the dry run predicted the prune")
            #expect(kept == before.subtracting(removed))
            #expect(report.kept == kept.count)
            if !removed.isEmpty {
                #expect(bytesAfter < bytesBefore, "pruning \(removed.count) point(s) did not shrink the store")
                #expect(report.reclaimedBytes > 0)
            }
            checkPolicy(now: now, kept: kept)
            if verify {
                let v = try m.verify()
                #expect(v.isClean, "verify after pruning: \(v.problems)")
                #expect(v.cleanPoints[machine] == made.last!.id)
                try checkExports(m, kept: kept, viaExport: false)
            }
            prunes += 1
            removedTotal += removed.count
            m.close()
            store = try f.open(.write)
        }

        // One commit every 5 minutes for a day, then hourly to day 14; prune every 30 minutes on the
        // first day and every 6 hours after.
        var t: Int64 = 0
        while t <= 14 * day {
            f.clock.set(Timestamp(seconds: start + t))
            try makeCommit()
            if t == 3 * hour + 5 * minute {
                // Not the first point of its 10-minute bucket: only the pin keeps it past 10 minutes.
                try store.pin(made.last!.id, holder: "investigation-42")
                pinned.insert(made.last!.id)
            }
            let pruneEvery = t < day ? 30 * minute : 6 * hour
            if t > 0 && t % pruneEvery == 0 {
                try pruneAndCheck(now: start + t, verify: t % day == 0)
            }
            t += t < day ? 5 * minute : hour
        }
        #expect(made.count == 288 + 13 * 24 + 1)
        #expect(prunes > 90)
        #expect(removedTotal > 500)

        // Every kept point still exports exactly its state.
        let kept = Set(store.commits(machine: machine).map(\.id))
        #expect(kept.count < 60)
        try checkExports(store, kept: kept, viaExport: true)

        // The pin held the old point; unpinning lets the next prune remove it.
        let pinnedID = try #require(pinned.first)
        #expect(kept.contains(pinnedID))
        #expect(store.pins().map(\.point) == [pinnedID])
        #expect(store.pins().first?.holder == "investigation-42")
        try store.unpin(pinnedID, holder: "someone-else")
        #expect(store.pins().count == 1, "unpin removes only the holder's pins")
        try store.unpin(pinnedID, holder: "investigation-42")
        #expect(store.pins().isEmpty)
        pinned = []
        try pruneAndCheck(now: f.clock.now().seconds, verify: true)
        store.close()
        let ro = try f.open(.read)
        #expect(!ro.commits(machine: machine).contains { $0.id == pinnedID })
        #expect(ro.pins().isEmpty)
        ro.close()
    }

    @Test("pruning reclaims the space of removed points; a pinned point keeps its data until unpinned")
    func reclaimAndPin() throws {
        let f = try StoreFixture()
        let machine = "files-1"
        let size = 4 * MiB
        var rng = SeededRandom(seed: 91)
        var model = [UInt8](repeating: 0, count: size)

        // c1: 1 MiB of random data that no other point has.
        let store = try f.open(.write)
        let b1 = try store.beginCommit(machine: machine)
        try b1.setSize(volume: "v", size: Int64(size))
        try apply(b1, &model, volume: "v", offset: 1 * MiB, rng.bytes(1 * MiB))
        let c1 = try b1.commit()
        let state1 = model

        // c2, an hour later: that region zeroed, one small change elsewhere.
        f.clock.advance(seconds: 3600)
        let b2 = try store.beginCommit(machine: machine)
        try apply(b2, &model, volume: "v", offset: 1 * MiB, [UInt8](repeating: 0, count: 1 * MiB))
        try apply(b2, &model, volume: "v", offset: 3 * MiB, rng.bytes(blockSize))
        let c2 = try b2.commit()
        try store.pin(c1.id, holder: "legal-hold")

        // c3, eight days later.
        f.clock.advance(seconds: 8 * 86400)
        let b3 = try store.beginCommit(machine: machine)
        try apply(b3, &model, volume: "v", offset: 3 * MiB + blockSize, rng.bytes(blockSize))
        let c3 = try b3.commit()
        let state3 = model
        store.close()

        // c2 is older than 7 days and goes; the pinned c1 stays, with its data.
        let m1 = try f.open(.maintenance)
        #expect(m1.pins().map(\.point) == [c1.id])
        let r1 = try m1.prune(policy: .default)
        #expect(r1.removed.map(\.id) == [c2.id])
        #expect(m1.commits(machine: machine).map(\.id) == [c1.id, c3.id])
        #expect(try f.files.totalBytes() > Int64(1 * MiB))
        expectSameBytes(try f.exported(m1, machine: machine, volume: "v", point: c1.id.description), state1, "pinned point after GC")
        expectSameBytes(try f.exported(m1, machine: machine, volume: "v", point: "latest"), state3, "newest point after GC")
        #expect(try m1.verify().isClean)
        m1.close()

        let w = try f.open(.write)
        try w.unpin(c1.id, holder: "legal-hold")
        w.close()

        let m2 = try f.open(.maintenance)
        let before = try f.files.totalBytes()
        let r2 = try m2.prune(policy: .default)
        let after = try f.files.totalBytes()
        #expect(r2.removed.map(\.id) == [c1.id])
        #expect(before - after >= Int64(1 * MiB), "removing the only point with 1 MiB of data freed \(before - after) bytes")
        #expect(r2.reclaimedBytes >= Int64(1 * MiB))
        #expect(r2.packsDeleted + r2.packsRewritten > 0)
        let report = try m2.verify()
        #expect(report.isClean, "\(report.problems)")
        #expect(report.cleanPoints == [machine: c3.id])
        expectSameBytes(try f.exported(m2, machine: machine, volume: "v", point: "latest"), state3, "newest point after the second GC")
        m2.close()

        let ro = try f.open(.read)
        #expect(ro.commits().map(\.id) == [c3.id])
        #expect(try ro.stats().points == 1)
        ro.close()
    }

    @Test("packs of a failed commit are collected; a writer removes leftovers of interrupted writes")
    func orphansAndLeftovers() throws {
        let f = try StoreFixture()
        let aImage = TestImage.mixed(size: 4 * MiB, seed: 92)
        let a = try f.writeImage("a.img", aImage)
        let b = try f.writeImage("b.img", TestImage.mixed(size: 2 * MiB, seed: 93))
        let store = try f.open(.write)
        let c1 = try store.ingest(machine: "m", volumes: [(name: "a", path: a), (name: "b", path: b)])
        let packs1 = try f.files.packs()

        // The commit fails after its first volume's data reached a finished pack.
        try FileTools.write(a, TestImage.mixed(size: 4 * MiB, seed: 94))
        try FileTools.truncate(b, to: Int64(1 * MiB))
        expectError("store.volume-shrank") { _ = try store.ingest(machine: "m", volumes: [(name: "a", path: a), (name: "b", path: b)]) }
        let orphans = try f.files.packs().subtracting(packs1)
        #expect(orphans.count == 1)
        store.close()

        // Leftovers of interrupted writes.
        try FileTools.write(f.root + "/tmp/0123abcd.4242.ffee", [1, 2, 3])
        try FileTools.write(f.root + "/config.tmp-4242", [4, 5, 6])
        let ro = try f.open(.read)
        ro.close()
        #expect(FileTools.exists(f.root + "/tmp/0123abcd.4242.ffee"), "a reader leaves the writer's files alone")
        let w = try f.open(.write)
        #expect(try FileTools.list(f.root + "/tmp").isEmpty)
        #expect(!FileTools.exists(f.root + "/config.tmp-4242"))
        #expect(FileTools.exists(f.root + "/config"))
        w.close()

        let m = try f.open(.maintenance)
        let report = try m.prune(policy: .default)
        #expect(report.removed.isEmpty)
        #expect(report.packsDeleted >= 1)
        for orphan in orphans { #expect(!FileTools.exists(orphan), "orphan pack \(orphan) was not collected") }
        #expect(try m.verify().isClean)
        expectSameBytes(try f.exported(m, machine: "m", volume: "a", point: c1.id.description), aImage, "a after collection")
        let stats = try m.stats()
        #expect(stats.points == 1)
        #expect(stats.machines == 1)
        #expect(stats.latestVolumeBytes == Int64(6 * MiB))
        #expect(stats.packs == (try f.files.packs()).count)
        #expect(stats.packBytes == (try f.files.packs()).reduce(Int64(0)) { $0 + ((try? FileTools.size($1)) ?? 0) })
        m.close()
    }
}
