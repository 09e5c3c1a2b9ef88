import Agent
import Synchronization
import Testing

/// A clock that moves only when something sleeps on it (or the test advances it), recording every sleep.
private final class ManualClock: Clock {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    private struct State {
        var now: Duration = .zero
        var sleeps: [Duration] = []
        var onSleep: (@Sendable (Int) -> Void)?
    }

    private let state = Mutex(State())

    var now: Instant { Instant(offset: state.withLock { $0.now }) }
    var minimumResolution: Duration { .nanoseconds(1) }

    /// Every sleep requested so far, in order.
    var sleeps: [Duration] { state.withLock { $0.sleeps } }

    /// The sleeps requested since the last call.
    func takeSleeps() -> [Duration] {
        state.withLock { s in
            defer { s.sleeps = [] }
            return s.sleeps
        }
    }

    /// Runs after the n-th sleep (1-based) has moved the clock, before the sleeper wakes.
    func onSleep(_ hook: @escaping @Sendable (Int) -> Void) { state.withLock { $0.onSleep = hook } }

    func advance(by duration: Duration) { state.withLock { $0.now += duration } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let (count, hook) = state.withLock { s in
            s.sleeps.append(deadline.offset - s.now)
            s.now = max(s.now, deadline.offset)
            return (s.sleeps.count, s.onSleep)
        }
        hook?(count)
        try Task.checkCancellation()
    }
}

/// The real clock, recording how long each sleep was asked to last.
private final class RecordingClock: Clock {
    private let inner = ContinuousClock()
    private let requested = Mutex<[Duration]>([])

    var now: ContinuousClock.Instant { inner.now }
    var minimumResolution: Duration { inner.minimumResolution }
    var sleeps: [Duration] { requested.withLock { $0 } }

    func sleep(until deadline: ContinuousClock.Instant, tolerance: Duration?) async throws {
        let asked = inner.now.duration(to: deadline)
        requested.withLock { $0.append(asked) }
        try await inner.sleep(until: deadline, tolerance: tolerance)
    }
}

private func ms(_ value: Int) -> Duration { .milliseconds(value) }

@Suite struct ThrottleTests {
    // 8 Mbit/s is 1,000,000 bytes per second: one byte per microsecond, a burst of 100,000 bytes.

    @Test func sleepsExactlyForTheDeficit() async throws {
        let clock = ManualClock()
        let throttle = Throttle(megabitsPerSecond: 8, clock: clock)

        try await throttle.acquire(bytes: 100_000)
        #expect(clock.takeSleeps() == [], "the bucket starts full: one burst passes at once")

        try await throttle.acquire(bytes: 50_000)
        #expect(clock.takeSleeps() == [ms(50)])

        try await throttle.acquire(bytes: 250_000)
        #expect(clock.takeSleeps() == [ms(100), ms(100), ms(50)], "long waits are cut into 100 ms sleeps")

        try await throttle.acquire(bytes: 1)
        #expect(clock.takeSleeps() == [.microseconds(1)])

        clock.advance(by: .seconds(5))
        try await throttle.acquire(bytes: 100_000)
        try await throttle.acquire(bytes: 1_000)
        #expect(clock.takeSleeps() == [.milliseconds(1)], "an idle spell refills one burst, not more")

        try await throttle.acquire(bytes: 0)
        #expect(clock.takeSleeps() == [])
    }

    @Test func rateChangesApplyAtOnce() async throws {
        let clock = ManualClock()
        let throttle = Throttle(megabitsPerSecond: 8, clock: clock)
        try await throttle.acquire(bytes: 100_000)

        throttle.setRate(megabitsPerSecond: 16)  // 2,000,000 bytes per second
        try await throttle.acquire(bytes: 100_000)
        #expect(clock.takeSleeps() == [ms(50)])

        throttle.setRate(megabitsPerSecond: 0)
        try await throttle.acquire(bytes: 10_000_000_000)
        #expect(clock.takeSleeps() == [], "0 is unlimited")

        throttle.setRate(megabitsPerSecond: 8)
        try await throttle.acquire(bytes: 150_000)
        #expect(clock.takeSleeps() == [ms(50)], "back from unlimited with a full bucket")

        throttle.setRate(megabitsPerSecond: 4)  // 500,000 bytes per second
        try await throttle.acquire(bytes: 25_000)
        #expect(clock.takeSleeps() == [ms(50)])
    }

    @Test func waitingSenderSeesRateChange() async throws {
        let clock = ManualClock()
        let throttle = Throttle(megabitsPerSecond: 8, clock: clock)
        try await throttle.acquire(bytes: 100_000)
        // 1,000,000 bytes at 1 MB/s would be ten 100 ms sleeps; after the first, the rate goes up tenfold.
        clock.onSleep { n in if n == 1 { throttle.setRate(megabitsPerSecond: 80) } }
        try await throttle.acquire(bytes: 1_000_000)
        #expect(clock.takeSleeps() == [ms(100), ms(90)])
    }

    @Test func cancelledSenderGivesBytesBack() async throws {
        let clock = ManualClock()
        let throttle = Throttle(megabitsPerSecond: 8, clock: clock)
        try await throttle.acquire(bytes: 100_000)
        clock.onSleep { n in if n == 1 { withUnsafeCurrentTask { $0?.cancel() } } }
        await #expect(throws: CancellationError.self) {
            try await Task { try await throttle.acquire(bytes: 1_000_000) }.value
        }
        #expect(clock.takeSleeps() == [ms(100)])
        // The 100 ms slept earned 100,000 bytes; the cancelled reservation was returned.
        try await throttle.acquire(bytes: 100_000)
        #expect(clock.takeSleeps() == [])
    }

    @Test func cancelledBeforeWaitingThrows() async throws {
        let throttle = Throttle(megabitsPerSecond: 8, clock: ManualClock())
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await throttle.acquire(bytes: 1)
        }
        await #expect(throws: CancellationError.self) { try await task.value }
    }

    /// With the real clock the throttle must never let more than the limit through: the transfer cannot finish
    /// sooner than its bytes (beyond the first burst) take at 8 Mbit/s, less 10 %. (How much slower it is depends on
    /// the machine's load; the exact sleeps are checked with the manual clock above.)
    @Test func realClockHoldsTheRate() async throws {
        let throttle = Throttle(megabitsPerSecond: 8)
        let total = 2_000_000
        var sent = 0
        let start = ContinuousClock.now
        while sent < total {
            let chunk = min(64 << 10, total - sent)
            try await throttle.acquire(bytes: chunk)
            sent += chunk
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let megabitsPerSecond = Double(total - 100_000) * 8 / seconds / 1e6
        #expect(megabitsPerSecond < 8 * 1.1, "measured \(megabitsPerSecond) Mbit/s over \(seconds) s")
    }
}
