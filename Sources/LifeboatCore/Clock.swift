/// The source of "now" for anything that stamps or ages data: commits, retention, lag.
///
/// Production code uses `SystemWallClock`; tests inject `ManualWallClock` to simulate weeks in a second.
public protocol WallClock: Sendable {
    func now() -> Timestamp
}

public struct SystemWallClock: WallClock {
    public init() {}
    public func now() -> Timestamp { Timestamp.now() }
}

/// A clock that moves only when told to.
public final class ManualWallClock: WallClock, @unchecked Sendable {
    private let lock = PlainLock()
    private var current: Timestamp

    public init(_ start: Timestamp) { self.current = start }

    public func now() -> Timestamp { lock.withLock { current } }

    public func advance(seconds: Int64) {
        lock.withLock { current.nanoseconds += seconds * 1_000_000_000 }
    }

    public func set(_ time: Timestamp) { lock.withLock { current = time } }
}
