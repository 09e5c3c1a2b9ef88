import Synchronization

/// A bounded count of long-lived responses (the console's live job logs).
final class StreamCounter: Sendable {
    private let count = Mutex(0)
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Takes a place, or false when all are taken.
    func enter() -> Bool {
        count.withLock {
            guard $0 < limit else { return false }
            $0 += 1
            return true
        }
    }

    func leave() { count.withLock { $0 -= 1 } }
}
