import LifeboatCore
import Synchronization

/// Slows down password guessing: after `failuresBeforeLockout` failed logins for one user name within the lockout
/// window — or four times as many from one address, so that people behind one NAT or proxy do not lock each
/// other out with a few typos — further attempts for it are refused (even with the right password) until the
/// window has passed. (Anyone can lock a named user out for a window this way; that is the price of stopping
/// guessing, and the lock ends by itself.)
///
/// An attempt counts as a failure from the moment it starts (`begin`) until it succeeds (`succeeded` takes it
/// back), so many attempts in parallel cannot all slip in before the first failure is recorded. In memory: a
/// restart forgets it; old entries are dropped and the map is bounded.
final class LoginThrottle: Sendable {
    private struct Record {
        var failures: [Int64] = []
        var lockedUntil: Int64 = 0
    }

    private let records = Mutex<[String: Record]>([:])
    private let clock: any WallClock
    static let maximumEntries = 50_000

    init(clock: any WallClock = SystemWallClock()) {
        self.clock = clock
    }

    /// The keys of an attempt (a user name is cut to its first 128 characters).
    static func keys(user: String, address: String) -> (user: String, address: String) {
        ("user:" + String(user.prefix(128)), "address:" + address)
    }

    /// Starts an attempt: the seconds to wait when `user` or `address` is locked (nothing recorded), else nil and
    /// the attempt is counted as a failure until `succeeded`.
    func begin(user: String, address: String, limit: Int, windowSeconds: Int) -> Int64? {
        let now = clock.now().nanoseconds
        let window = Int64(windowSeconds) * 1_000_000_000
        let keys = Self.keys(user: user, address: address)
        return records.withLock { records in
            let waits = [keys.user, keys.address].compactMap { key -> Int64? in
                guard let until = records[key]?.lockedUntil, until > now else { return nil }
                return (until - now + 999_999_999) / 1_000_000_000
            }
            if let wait = waits.max() { return wait }
            for (key, keyLimit) in [(keys.user, limit), (keys.address, limit * 4)] {
                var record = records[key] ?? Record()
                record.failures = record.failures.filter { now - $0 < window } + [now]
                if record.failures.count >= keyLimit {
                    record.lockedUntil = now + window
                    record.failures = []
                }
                records[key] = record
            }
            if records.count > Self.maximumEntries { Self.prune(&records, now: now, window: window) }
            return nil
        }
    }

    /// Seconds until `user` may try again, or nil (for the access check).
    func retryAfter(user: String) -> Int64? {
        let now = clock.now().nanoseconds
        return records.withLock { records in
            guard let until = records[Self.keys(user: user, address: "").user]?.lockedUntil, until > now else { return nil }
            return (until - now + 999_999_999) / 1_000_000_000
        }
    }

    /// A successful login: the user's failures are forgotten and the attempt is taken back from the address.
    func succeeded(user: String, address: String) {
        let keys = Self.keys(user: user, address: address)
        records.withLock { records in
            records.removeValue(forKey: keys.user)
            if var record = records[keys.address], !record.failures.isEmpty {
                record.failures.removeLast()
                records[keys.address] = record
            }
        }
    }

    /// Drops failures older than the window and unlocked entries without failures; if still too many, the
    /// entries with the oldest activity.
    private static func prune(_ records: inout [String: Record], now: Int64, window: Int64) {
        records = records.compactMapValues { record in
            var record = record
            record.failures = record.failures.filter { now - $0 < window }
            return record.failures.isEmpty && record.lockedUntil <= now ? nil : record
        }
        if records.count > maximumEntries {
            let keep = records.sorted { ($0.value.failures.last ?? $0.value.lockedUntil) > ($1.value.failures.last ?? $1.value.lockedUntil) }
                .prefix(maximumEntries / 2)
            records = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
    }
}
