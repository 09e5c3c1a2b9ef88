import Dispatch
import LifeboatCore

/// Slots written by parallel workers, each index by exactly one worker.
final class ParallelSlots<T>: @unchecked Sendable {
    private let buffer: UnsafeMutableBufferPointer<T>

    init(count: Int, initial: T) {
        buffer = .allocate(capacity: max(count, 1))
        buffer.initialize(repeating: initial)
    }

    deinit {
        buffer.deinitialize()
        buffer.deallocate()
    }

    subscript(index: Int) -> T {
        get { buffer[index] }
        set { buffer[index] = newValue }
    }
}

/// Runs `body` for 0..<count on all cores; stops starting new iterations after the first error and throws it.
func parallelForEach(_ count: Int, _ body: @Sendable (Int) throws -> Void) throws {
    let lock = PlainLock()
    let failure = ParallelSlots<(any Error)?>(count: 1, initial: nil)
    DispatchQueue.concurrentPerform(iterations: count) { index in
        if lock.withLock({ failure[0] != nil }) { return }
        do {
            try body(index)
        } catch {
            lock.withLock { if failure[0] == nil { failure[0] = error } }
        }
    }
    if let error = failure[0] { throw error }
}
