import Synchronization

/// A token bucket that holds uploads to a bandwidth limit in megabits per second (0 = unlimited).
///
/// The bucket holds at most 100 ms worth of the rate (the burst after an idle spell) and starts full.
/// A sender reserves its bytes at once, in call order, and sleeps until the bucket has paid for them; a
/// request larger than the burst simply waits longer. Sleeps last at most 100 ms each, so a rate change
/// reaches waiting senders within that time, and new requests at once.
public final class Throttle: Sendable {
    /// The most traffic that passes without waiting after an idle spell, as time at the current rate.
    public static let burst: Duration = .milliseconds(100)
    /// The longest single sleep, so that waiting senders see a rate change soon.
    static let longestSleep: Duration = .milliseconds(100)

    /// Token counts are in nano-bytes (bytes × 10⁹), so that time in nanoseconds × bytes per second adds
    /// up without rounding.
    private struct Bucket: Sendable {
        var bytesPerSecond: Int64
        /// Everything ever paid into the bucket (the initial burst included).
        var credited: Int128
        /// Everything ever reserved by senders.
        var debited: Int128
        var lastRefill: Duration

        var burstUnits: Int128 { Int128(bytesPerSecond) * Int128(Throttle.burst.nanoseconds) }

        /// Pays in what the rate earned since the last refill, up to a full bucket.
        mutating func refill(at now: Duration) {
            if bytesPerSecond == 0 {
                credited = max(credited, debited)
            } else if now > lastRefill {
                credited += Int128((now - lastRefill).nanoseconds) * Int128(bytesPerSecond)
            }
            credited = min(credited, debited + burstUnits)
            lastRefill = max(lastRefill, now)
        }
    }

    private let bucket: Mutex<Bucket>
    private let now: @Sendable () -> Duration
    private let sleep: @Sendable (Duration) async throws -> Void

    /// A throttle at `megabitsPerSecond` (10⁶ bits per second; 0 = unlimited) that reads time from `clock`.
    public init(megabitsPerSecond: UInt32, clock: some Clock<Duration> = ContinuousClock()) {
        let start = clock.now
        now = { start.duration(to: clock.now) }
        sleep = { try await clock.sleep(for: $0) }
        let rate = Self.bytesPerSecond(megabitsPerSecond)
        var bucket = Bucket(bytesPerSecond: rate, credited: 0, debited: 0, lastRefill: .zero)
        bucket.credited = bucket.burstUnits
        self.bucket = Mutex(bucket)
    }

    /// Changes the limit (0 = unlimited); applies to new requests at once and to waiting ones within 100 ms.
    public func setRate(megabitsPerSecond: UInt32) {
        let t = now()
        bucket.withLock { b in
            b.refill(at: t)
            let wasUnlimited = b.bytesPerSecond == 0
            b.bytesPerSecond = Self.bytesPerSecond(megabitsPerSecond)
            if wasUnlimited { b.credited = b.debited + b.burstUnits }
            b.refill(at: t)
        }
    }

    /// Waits until `bytes` may be sent at the current rate.
    /// - Throws: `CancellationError` when the task is cancelled while waiting (the bytes are given back).
    public func acquire(bytes: Int) async throws {
        guard bytes > 0 else { return }
        try Task.checkCancellation()
        let units = Int128(bytes) * 1_000_000_000
        let t = now()
        let target: Int128? = bucket.withLock { b in
            b.refill(at: t)
            guard b.bytesPerSecond > 0 else { return nil }
            b.debited += units
            return b.debited
        }
        guard let target else { return }
        while let wait = nextSleep(until: target) {
            do {
                try await sleep(wait)
            } catch {
                let t = now()
                bucket.withLock { b in
                    b.refill(at: t)
                    b.credited += units
                    b.refill(at: t)
                }
                throw error
            }
        }
    }

    /// How long to sleep before the bucket has been paid up to `target`; nil when it has.
    private func nextSleep(until target: Int128) -> Duration? {
        let t = now()
        return bucket.withLock { b -> Duration? in
            b.refill(at: t)
            guard b.bytesPerSecond > 0, b.credited < target else { return nil }
            let rate = Int128(b.bytesPerSecond)
            let nanoseconds = (target - b.credited + rate - 1) / rate
            return .nanoseconds(Int64(min(nanoseconds, Int128(Self.longestSleep.nanoseconds))))
        }
    }

    static func bytesPerSecond(_ megabitsPerSecond: UInt32) -> Int64 { Int64(megabitsPerSecond) * 125_000 }
}

extension Duration {
    /// Whole nanoseconds (rounded down).
    fileprivate var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
