public import NIOPosix

extension NIOThreadPool {
    /// Runs blocking work (pread, fsync, the store's engine) on this pool and returns its value or rethrows its
    /// error; the event loops never block on disk.
    public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await runIfActive(body)
    }
}
