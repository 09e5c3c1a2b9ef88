import LifeboatCore
import Testing

private let minute: Int64 = 60
private let hour: Int64 = 3600
private let day: Int64 = 86400

/// A midnight (2026-09-22T00:00:00Z), so that buckets of every rule start together.
private let t0: Int64 = 1_790_035_200

@Suite("RetentionPolicy")
struct RetentionPolicyTests {
    @Test("the default policy is the documented one and is valid")
    func defaultPolicy() throws {
        let p = RetentionPolicy.default
        #expect(p.keepEveryCommitFor == 600)
        #expect(p.rules.map(\.unit) == [.minute, .hour, .day])
        #expect(p.rules.map(\.interval) == [10, 1, 1])
        #expect(p.rules.map(\.retentionDuration) == [60, 24, 7])
        #expect(p.rules.allSatisfy { $0.enabled })
        try p.validate()
        #expect(RetentionPolicy.Unit.minute.seconds == 60)
        #expect(RetentionPolicy.Unit.hour.seconds == 3600)
        #expect(RetentionPolicy.Unit.day.seconds == 86400)
        #expect(RetentionPolicy.Unit.allCases.map(\.rawValue) == ["MINUTE", "HOUR", "DAY"])
    }

    @Test("validate names the bad rule")
    func validate() throws {
        func code(_ p: RetentionPolicy) -> (String, String)? {
            do {
                try p.validate()
                return nil
            } catch let e as LifeboatError {
                return (e.code.rawValue, e.message)
            } catch {
                return ("?", "\(error)")
            }
        }
        let negative = RetentionPolicy(keepEveryCommitFor: -1, rules: [])
        #expect(code(negative)?.0 == "policy.invalid")

        let zeroInterval = RetentionPolicy(
            keepEveryCommitFor: 0,
            rules: [.init(unit: .hour, interval: 1, retentionDuration: 24), .init(unit: .minute, interval: 0, retentionDuration: 60)]
        )
        #expect(code(zeroInterval)?.0 == "policy.invalid")
        #expect(code(zeroInterval)?.1.contains("rule 2") == true)

        let negativeInterval = RetentionPolicy(keepEveryCommitFor: 0, rules: [.init(unit: .day, interval: -1, retentionDuration: 7)])
        #expect(code(negativeInterval)?.1.contains("rule 1") == true)

        let shortRetention = RetentionPolicy(
            keepEveryCommitFor: 0,
            rules: [.init(unit: .minute, interval: 10, retentionDuration: 60), .init(unit: .day, interval: 2, retentionDuration: 1)]
        )
        #expect(code(shortRetention)?.0 == "policy.invalid")
        #expect(code(shortRetention)?.1.contains("rule 2") == true)

        // Edge cases that are fine.
        try RetentionPolicy(keepEveryCommitFor: 0, rules: []).validate()
        try RetentionPolicy(keepEveryCommitFor: 0, rules: [.init(unit: .hour, interval: 3, retentionDuration: 3)]).validate()
        // A disabled rule is still checked.
        let disabledBad = RetentionPolicy(keepEveryCommitFor: 0, rules: [.init(unit: .hour, interval: 0, retentionDuration: 3, enabled: false)])
        #expect(code(disabledBad)?.0 == "policy.invalid")
    }

    @Test("no commits, no points")
    func empty() {
        let none: [(id: Int, time: Int64)] = []
        #expect(RetentionPolicy.default.select(commits: none, now: t0).isEmpty)
    }

    @Test("the newest commit and pinned commits are always kept")
    func newestAndPinned() {
        let commits: [(id: Int, time: Int64)] = [(1, t0), (2, t0 + 100), (3, t0 + 200)]
        let now = t0 + 365 * day
        #expect(RetentionPolicy.default.select(commits: commits, now: now) == [3])
        #expect(RetentionPolicy.default.select(commits: commits, now: now, pinned: [1]) == [1, 3])
        // Pins of ids that are not among the commits are not invented.
        #expect(RetentionPolicy.default.select(commits: commits, now: now, pinned: [99]) == [3])
        // Newest by time, whatever the order given.
        #expect(RetentionPolicy.default.select(commits: commits.reversed(), now: now) == [3])
        let none = RetentionPolicy(keepEveryCommitFor: 0, rules: [])
        #expect(none.select(commits: commits, now: t0 + 200) == [3])
    }

    @Test("every commit younger than keepEveryCommitFor is kept; the bound is exclusive")
    func keepEvery() {
        let p = RetentionPolicy(keepEveryCommitFor: 600, rules: [])
        let now = t0 + 10_000
        let commits: [(id: Int, time: Int64)] = (0..<20).map { (id: $0, time: now - 1200 + Int64($0) * 60) }
        // Ages 1200, 1140, ..., 60: younger than 600 means ages 540 down to 60 (ids 11...19).
        #expect(p.select(commits: commits, now: now) == Set(11...19))
        let exactly: [(id: Int, time: Int64)] = [(1, now - 600), (2, now - 599), (3, now - 1000)]
        #expect(p.select(commits: exactly, now: now) == [2])  // 2 is also the newest; 1 is exactly 600 s old
    }

    @Test("one commit a minute for three days, pruned once, keeps the oldest of each bucket in each window")
    func minutelyForThreeDays() {
        let commits: [(id: Int64, time: Int64)] = stride(from: t0, to: t0 + 3 * day, by: Int(minute)).map { (id: $0, time: $0) }
        let now = t0 + 3 * day  // one minute after the last commit
        let keep = RetentionPolicy.default.select(commits: commits, now: now)
        // Independently: every commit younger than 10 minutes, and per rule the oldest commit inside the
        // rule's window of each bucket.
        var expected = Set(commits.filter { now - $0.time < 600 }.map(\.id))
        for (window, bucket) in [(hour, 10 * minute), (day, hour), (7 * day, day)] {
            var oldest: [Int64: Int64] = [:]
            for c in commits where now - c.time < window {
                let b = c.time / bucket
                oldest[b] = min(oldest[b] ?? .max, c.time)
            }
            expected.formUnion(oldest.values)
        }
        #expect(keep == expected)
        // 9 younger than 10 minutes; 10-minute points at ages 600...3000 and 3540 (the oldest inside the hour
        // of the bucket the window cuts); 24 hourly (ages 3600...82800 and 86340); 3 daily (1, 2, 3 days).
        #expect(keep.count == 9 + 6 + 24 + 3)
        #expect(keep.contains(now - 3540) && keep.contains(now - 3600) && !keep.contains(now - 3660))
        #expect(keep.contains(now - 86340) && keep.contains(now - day) && keep.contains(t0))
    }

    @Test("a window that cuts a bucket keeps the oldest commit inside the window")
    func windowCutsBucket() {
        // Hourly rule only, 2 hours back. now = t0 + 2h30m: the window starts at t0 + 30m, inside the hour of t0.
        let p = RetentionPolicy(keepEveryCommitFor: 0, rules: [.init(unit: .hour, interval: 1, retentionDuration: 2)])
        let now = t0 + 2 * hour + 30 * minute
        let commits: [(id: Int, time: Int64)] = [
            (1, t0 + 10 * minute),  // outside the window
            (2, t0 + 40 * minute),  // first in the window, same hour as 1
            (3, t0 + 50 * minute),
            (4, t0 + hour + 5 * minute),
            (5, t0 + hour + 55 * minute),
            (6, t0 + 2 * hour + 20 * minute),
        ]
        #expect(p.select(commits: commits, now: now) == [2, 4, 6])
        // Commits exactly at the window's edge are outside it.
        let edge: [(id: Int, time: Int64)] = [(1, now - 2 * hour), (2, now - 2 * hour + 1), (3, now)]
        #expect(p.select(commits: edge, now: now) == [2, 3])
    }

    @Test("a disabled rule keeps nothing; intervals of several units bucket from the epoch")
    func disabledAndMultiUnit() {
        let now = t0 + day
        let commits: [(id: Int64, time: Int64)] = stride(from: t0, to: now, by: Int(hour)).map { (id: $0, time: $0) }
        let off = RetentionPolicy(keepEveryCommitFor: 0, rules: [.init(unit: .hour, interval: 1, retentionDuration: 48, enabled: false)])
        #expect(off.select(commits: commits, now: now) == [commits.last!.id])
        let sixHourly = RetentionPolicy(keepEveryCommitFor: 0, rules: [.init(unit: .hour, interval: 6, retentionDuration: 48)])
        #expect(sixHourly.select(commits: commits, now: now) == Set([0, 6, 12, 18, 23].map { t0 + Int64($0) * hour }))
    }

    @Test("selection does not depend on input order and is idempotent")
    func orderAndIdempotence() {
        var state: UInt64 = 42
        func next(_ bound: Int64) -> Int64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int64(state >> 33) % bound
        }
        var commits: [(id: Int, time: Int64)] = []
        var times = Set<Int64>()  // distinct times, as the store guarantees per machine
        while times.count < 500 { times.insert(t0 + next(10 * day)) }
        for (i, time) in times.sorted().enumerated() { commits.append((id: i, time: time)) }
        let now = t0 + 10 * day
        let pinned: Set<Int> = [3, 77]
        let keep = RetentionPolicy.default.select(commits: commits, now: now, pinned: pinned)
        var shuffled = commits
        for i in stride(from: shuffled.count - 1, to: 0, by: -1) { shuffled.swapAt(i, Int(next(Int64(i + 1)))) }
        #expect(RetentionPolicy.default.select(commits: shuffled, now: now, pinned: pinned) == keep)
        let survivors = commits.filter { keep.contains($0.id) }
        #expect(RetentionPolicy.default.select(commits: survivors, now: now, pinned: pinned) == keep)
        #expect(keep.isSuperset(of: pinned))
        // Nothing older than 7 days except pins.
        for c in commits where keep.contains(c.id) && now - c.time >= 7 * day { #expect(pinned.contains(c.id)) }
    }

    @Test("applied again later, a kept point stays kept while it is inside a window")
    func stableOverTime() {
        // Commits every 5 minutes for two days, pruned every 20 minutes; each prune sees only survivors.
        var alive: [(id: Int64, time: Int64)] = []
        var t = t0
        var lastKept = Set<Int64>()
        while t < t0 + 2 * day {
            alive.append((id: t, time: t))
            if (t - t0) % (20 * minute) == 0 {
                let keep = RetentionPolicy.default.select(commits: alive, now: t)
                // A point kept before, still younger than a day, must still be kept unless it was only
                // kept by a shorter window it has now left.
                for id in lastKept where t - id < day && id % hour == 0 {
                    #expect(keep.contains(id), "hourly point of age \(t - id)s was dropped")
                }
                for id in lastKept where t - id < 7 * day && id % day == 0 {
                    #expect(keep.contains(id), "daily point of age \(t - id)s was dropped")
                }
                alive = alive.filter { keep.contains($0.id) }
                lastKept = keep
            }
            t += 5 * minute
        }
        #expect(lastKept.count <= 2 + 6 + 24 + 7 + 1)
    }
}
