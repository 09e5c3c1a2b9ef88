import LifeboatCore
import Synchronization

/// Slows down password guessing: after `failuresBeforeLockout` failed logins for one user name within the lockout
/// window — or four times as many from one address, so that people behind one NAT or proxy do not lock each
/// other out with a few typos — further attempts for it are refused (even with the right password) until the
/// window has passed. (Anyone can lock a named user out for a window this way; that is the price of stopping
/// guessing, and the lock ends by itself.) In memory: a restart forgets it, which only helps an attacker who can restart the
/// server — and that one has the catalog anyway.
final class LoginThrottle: Sendable {
    private struct Record {
        var failures: [Int64] = []
        var lockedUntil: Int64 = 0
    }

    private let records = Mutex<[String: Record]>([:])
    private let clock: any WallClock

    init(clock: any WallClock = SystemWallClock()) {
        self.clock = clock
    }

    /// Seconds until `keys` may try again, or nil when they may now.
    func retryAfter(_ keys: [String]) -> Int64? {
        let now = clock.now().nanoseconds
        return records.withLock { records in
            let waits = keys.compactMap { key -> Int64? in
                guard let until = records[key]?.lockedUntil, until > now else { return nil }
                return (until - now + 999_999_999) / 1_000_000_000
            }
            return waits.max()
        }
    }

    /// Records a failed login of `user` from `address`: the user is locked at `limit` failures within
    /// `windowSeconds`, the address at four times that.
    func failed(user: String, address: String, limit: Int, windowSeconds: Int) {
        failed([("user:" + user, limit), ("address:" + address, limit * 4)], windowSeconds: windowSeconds)
    }

    /// Records a failed attempt for each key; locks a key at its limit within `windowSeconds`.
    func failed(_ keys: [(key: String, limit: Int)], windowSeconds: Int) {
        let now = clock.now().nanoseconds
        let window = Int64(windowSeconds) * 1_000_000_000
        records.withLock { records in
            for (key, limit) in keys {
                var record = records[key] ?? Record()
                record.failures = record.failures.filter { now - $0 < window } + [now]
                if record.failures.count >= limit {
                    record.lockedUntil = now + window
                    record.failures = []
                }
                records[key] = record
            }
            if records.count > 100_000 {
                records = records.filter { !$0.value.failures.isEmpty || $0.value.lockedUntil > now }
            }
        }
    }

    /// A successful login clears the user's failures (not the address's: one address may try many names).
    func succeeded(_ key: String) {
        _ = records.withLock { $0.removeValue(forKey: key) }
    }
}
