import LifeboatCore
public import NIOPosix

extension NIOThreadPool {
    /// Runs blocking work (pread, fsync, the store's engine) on this pool and returns its value or rethrows its
    /// error. Errors cross back as a `Result` value rather than through `runIfActive`'s own throwing path: in a
    /// release build with Swift 6.3 a `catch … as LifeboatError` after a throwing `runIfActive` crashed in
    /// `swift_dynamicCast` (bad error pointer); carrying the error as a value avoids that path entirely.
    public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let outcome: Result<T, BlockingFailure> = try await runIfActive {
            do {
                return .success(try body())
            } catch {
                return .failure(BlockingFailure(error: error as? LifeboatError ?? LifeboatError("internal", "\(error)", cause: error)))
            }
        }
        switch outcome {
        case .success(let value): return value
        case .failure(let failure): throw failure.error
        }
    }
}

/// A `LifeboatError` as a `Result` failure.
struct BlockingFailure: Error {
    var error: LifeboatError
}
