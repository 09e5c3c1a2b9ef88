import NIOPosix

/// Runs synchronous catalog and store calls (SQLite, file I/O) on a thread pool, off the cooperative pool.
enum Blocking {
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 8)
        pool.start()
        return pool
    }()

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }
}

/// Password hashing (scrypt: ~0.1 s and 32 MiB each) on two threads of its own: logins queue here rather than
/// taking the threads every catalog call needs.
enum PasswordPool {
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }
}
