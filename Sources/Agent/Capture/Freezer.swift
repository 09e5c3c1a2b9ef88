#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import LifeboatCore
import LifeboatSystem
public import Logging
import SystemPackage
#if canImport(CoreFoundation)
    // Once a file of this module imports Foundation, `stat` and the pthread types resolve through CoreFoundation.
    import CoreFoundation
#endif

/// Freezes the filesystems of a machine for a crash-consistent capture (FIFREEZE), with a watchdog that
/// always thaws them.
///
/// While frozen, every write to those filesystems blocks in the kernel — including the agent's own log
/// lines if they go to a file there — so the body of `withFrozen` must only read block devices and write
/// to memory or to the excluded state filesystem.
public final class Freezer: Sendable {
    /// The mount points to freeze, in freezing order (sorted; thawed in reverse).
    public let mountPoints: [String]
    private let logger: Logger

    /// A freezer for these mount points (usually from `mountPoints(onVolumes:excludingPath:)`).
    public init(mountPoints: [String], logger: Logger) {
        self.mountPoints = Array(Set(mountPoints)).sorted()
        self.logger = logger
    }

    /// Freezes every filesystem, runs `body`, and thaws them all in reverse order — also when `body` throws.
    ///
    /// A watchdog thread thaws everything when `maxDuration` has passed since freezing began, even if
    /// `body` hangs; the call then discards body's result and throws `freeze.timeout`. This call blocks its
    /// thread: run it off the cooperative pool.
    /// - Returns: body's value and how long the filesystems were frozen (first FIFREEZE to last FITHAW).
    /// - Throws: `freeze.failed` when a filesystem cannot be frozen (nothing stays frozen), `freeze.timeout`,
    ///   `freeze.thaw-failed` (the message names the command that thaws by hand), or body's error.
    ///
    /// With no mount points there is nothing to freeze and no writer is blocked: `body` runs without a deadline
    /// and the frozen time is zero. (Volumes without a mounted filesystem, such as image files or raw disks, are
    /// then captured as they are; the point is exact only if nothing writes to them during the final round.)
    public func withFrozen<T>(maxDuration: Duration, _ body: () throws -> T) throws -> (value: T, frozenFor: Duration) {
        guard !mountPoints.isEmpty else { return (try body(), .zero) }
        let session = try FreezeSession(mountPoints: mountPoints, logger: logger)
        defer { session.close() }
        // Flush dirty data while writers still run, so that FIFREEZE's own flush (writers blocked) is short.
        session.flush()

        let clock = ContinuousClock()
        let start = clock.now
        try session.startWatchdog(deadline: maxDuration)
        // nil when the watchdog fired before everything was frozen (body did not run).
        let outcome: Result<T, any Error>?
        do {
            outcome = try session.freezeAll() ? Result { try body() } : nil
        } catch {
            outcome = .failure(error)
        }
        let report = session.finish()
        let frozenFor = start.duration(to: clock.now)

        if !report.thawFailures.isEmpty {
            let commands = report.thawFailures.map { "fsfreeze -u \($0)" }.joined(separator: "; ")
            throw LifeboatError(
                "freeze.thaw-failed",
                "could not thaw \(report.thawFailures.joined(separator: ", ")): writes there stay blocked until "
                    + "thawed by hand: \(commands)"
            )
        }
        if report.timedOut {
            throw LifeboatError(
                "freeze.timeout",
                "capture took longer than the maximum freeze time of \(Self.milliseconds(maxDuration)) ms; "
                    + "the point is not offered",
                cause: outcome?.failure
            )
        }
        switch outcome {
        case .success(let value)?:
            logger.debug(
                "thawed filesystems",
                metadata: ["mountPoints": "\(session.paths)", "frozenMs": "\(Self.milliseconds(frozenFor))"]
            )
            return (value, frozenFor)
        case .failure(let error)?:
            throw error
        case nil:
            preconditionFailure("freezing stops early only when the watchdog fired")
        }
    }

    static func milliseconds(_ d: Duration) -> Int64 {
        d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    /// The error for a failed FIFREEZE, saying what to do about it.
    static func freezeError(_ code: Int32, path: String) -> LifeboatError {
        let errno = Errno(rawValue: code)
        let reason: String
        switch code {
        case EBUSY:
            reason =
                "it is already frozen (by fsfreeze or another backup tool); once that tool is done, "
                + "thaw it with `fsfreeze -u \(path)` and retry"
        case ENOTSUP, ENOTTY:
            reason =
                "its filesystem does not support freezing, so no crash-consistent point can be taken; "
                + "keep the machine's data on ext4, xfs or btrfs"
        case EPERM, EACCES:
            reason = "freezing needs root (CAP_SYS_ADMIN); run the agent as root"
        default:
            reason = "\(errno)"
        }
        return LifeboatError("freeze.failed", "cannot freeze the filesystem at \(path): \(reason)", cause: errno)
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

// FIFREEZE = _IOWR('X', 119, int), FITHAW = _IOWR('X', 120, int).
private let fiFreeze: UInt = 0xC004_5877
private let fiThaw: UInt = 0xC004_5878

/// One freeze: open descriptors of the mount points, how many are frozen, and the watchdog thread.
///
/// Everything below `mutex` is guarded by it; the watchdog and the calling thread both thaw through
/// `thawAllLocked`, which is idempotent.
private final class FreezeSession: @unchecked Sendable {
    let paths: [String]
    private let fds: [Int32]
    private let logger: Logger
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var frozenCount = 0
    private var timedOut = false
    private var finished = false
    private var thawFailures: [String] = []
    private var watchdog: pthread_t?

    /// Opens every mount point (one per filesystem: a second path to the same filesystem is dropped).
    init(mountPoints: [String], logger: Logger) throws {
        var paths: [String] = []
        var fds: [Int32] = []
        var devices = Set<UInt64>()
        do {
            for path in mountPoints {
                let fd = try SystemCalls.wrap("opening mount point", path: path) {
                    try FileDescriptor.open(FilePath(path), .readOnly, options: [.directory, .closeOnExec])
                }
                var st = stat()
                guard fstat(fd.rawValue, &st) == 0, devices.insert(UInt64(st.st_dev)).inserted else {
                    try? fd.close()
                    continue
                }
                paths.append(path)
                fds.append(fd.rawValue)
            }
        } catch {
            for fd in fds { Glibc.close(fd) }
            throw LifeboatError("freeze.failed", "cannot prepare the freeze of the machine's filesystems", cause: error)
        }
        self.paths = paths
        self.fds = fds
        self.logger = logger
        // pthread_*_init initialize the (trivial) memory; the condition waits on the monotonic clock.
        pthread_mutex_init(mutex, nil)
        let attributes = UnsafeMutablePointer<pthread_condattr_t>.allocate(capacity: 1)
        defer { attributes.deallocate() }
        pthread_condattr_init(attributes)
        pthread_condattr_setclock(attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, attributes)
        pthread_condattr_destroy(attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Writes dirty data out while writers still run (sync(2): Glibc's module does not export syncfs).
    func flush() {
        if !fds.isEmpty { sync() }
    }

    /// Starts the watchdog thread that thaws everything `after` from now.
    func startWatchdog(deadline after: Duration) throws {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let (seconds, attoseconds) = max(after, .zero).components
        let nanoseconds = Int(deadline.tv_nsec) + Int(attoseconds / 1_000_000_000)
        deadline.tv_sec += Int(seconds) + nanoseconds / 1_000_000_000
        deadline.tv_nsec = nanoseconds % 1_000_000_000

        let context = Unmanaged.passRetained(WatchdogContext(session: self, deadline: deadline)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread,
            nil,
            { raw in
                let context = Unmanaged<WatchdogContext>.fromOpaque(raw!).takeRetainedValue()
                context.session.watch(until: context.deadline)
                return nil
            },
            context
        )
        guard rc == 0 else {
            Unmanaged<WatchdogContext>.fromOpaque(context).release()
            throw LifeboatError(
                "freeze.failed",
                "cannot start the freeze watchdog thread, so nothing was frozen",
                cause: Errno(rawValue: rc)
            )
        }
        watchdog = thread
    }

    /// Freezes in order; false when the watchdog fired first (it has thawed what was frozen).
    /// - Throws: `freeze.failed` after thawing whatever this call froze.
    func freezeAll() throws -> Bool {
        enum Step { case frozen, timedOut, failed(Int32) }
        for (index, fd) in fds.enumerated() {
            let step: Step = locked {
                if timedOut { return .timedOut }
                if ioctl(fd, fiFreeze, Int32(0)) == 0 {
                    frozenCount = index + 1
                    return .frozen
                }
                let code = errno
                thawAllLocked()
                return .failed(code)
            }
            switch step {
            case .frozen: continue
            case .timedOut: return false
            case .failed(let code): throw Freezer.freezeError(code, path: paths[index])
            }
        }
        return true
    }

    /// Thaws (idempotent), stops the watchdog and waits for its thread to end.
    func finish() -> (timedOut: Bool, thawFailures: [String]) {
        let report = locked {
            thawAllLocked()
            finished = true
            pthread_cond_signal(condition)
            return (timedOut, thawFailures)
        }
        if let thread = watchdog {
            pthread_join(thread, nil)
            watchdog = nil
        }
        for path in report.1 {
            logger.critical(
                "could not thaw a filesystem; thaw it with fsfreeze -u",
                metadata: ["mountPoint": "\(path)"]
            )
        }
        return report
    }

    func close() {
        for fd in fds { Glibc.close(fd) }
    }

    /// The watchdog thread's body: wait for `finish` or the deadline, whichever comes first.
    fileprivate func watch(until deadline: timespec) {
        var deadline = deadline
        let fired: Bool = locked {
            while !finished {
                var now = timespec()
                clock_gettime(CLOCK_MONOTONIC, &now)
                if now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec) {
                    timedOut = true
                    thawAllLocked()
                    return true
                }
                pthread_cond_timedwait(condition, mutex, &deadline)
            }
            return false
        }
        // Log only after thawing: the log may live on a frozen filesystem.
        if fired {
            logger.error("freeze watchdog fired: thawed all filesystems", metadata: ["mountPoints": "\(paths)"])
        }
    }

    /// FITHAW of everything frozen, in reverse order. EINVAL (not frozen) is fine.
    private func thawAllLocked() {
        while frozenCount > 0 {
            frozenCount -= 1
            if ioctl(fds[frozenCount], fiThaw, Int32(0)) != 0, errno != EINVAL {
                thawFailures.append(paths[frozenCount])
            }
        }
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}

private final class WatchdogContext {
    let session: FreezeSession
    let deadline: timespec

    init(session: FreezeSession, deadline: timespec) {
        self.session = session
        self.deadline = deadline
    }
}
