import Catalog
import Dispatch
import LifeboatCore
import LifeboatTesting
import Testing

/// What each thread threw, if anything, behind a lock.
private final class Failures: @unchecked Sendable {
    private let lock = PlainLock()
    private var errors: [(any Error)?]

    init(_ count: Int) { errors = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ error: (any Error)?) { lock.withLock { errors[index] = error } }
    var all: [(any Error)?] { lock.withLock { errors } }
}

/// Runs `body(thread)` on `threads` threads at once and waits for all; returns what each threw, if anything.
private func onThreads(_ threads: Int, _ body: @escaping @Sendable (Int) throws -> Void) -> [(any Error)?] {
    let failures = Failures(threads)
    let group = DispatchGroup()
    for thread in 0..<threads {
        DispatchQueue.global().async(group: group) {
            do { try body(thread) } catch { failures.set(thread, error) }
        }
    }
    group.wait()
    return failures.all
}

@Suite("Concurrent writers")
struct ConcurrencyTests {
    @Test("threads writing through one catalog and through a second connection lose no update")
    func noLostUpdates() throws {
        let f = try CatalogFixture()
        try f.enroll("shared", serial: "00")
        let first = f.catalog
        let second = try Catalog.open(path: f.path, clock: f.clock)  // as the command line would, next to the server
        defer { second.close() }
        for t in 0..<6 { try f.enroll("m\(t)", serial: "1\(t)") }

        let perThread = 30
        let failures = onThreads(6) { thread in
            let catalog = thread % 2 == 0 ? first : second
            for i in 0..<perThread {
                try catalog.recordEvent(machine: "shared", kind: "TEST", detail: "\(thread)/\(i)")
                try catalog.recordCommit(
                    machine: "m\(thread)",
                    point: UInt64(i + 1),
                    sequence: UInt64(i + 1),
                    captureTime: Timestamp(seconds: Int64(i)),
                    consistent: true,
                    changedBytes: 1
                )
                if i % 10 == 0 { _ = try catalog.createEnrollmentToken(validFor: 60) }
            }
        }
        #expect(failures.allSatisfy { $0 == nil }, "\(failures.compactMap { $0 })")

        let events = try first.events(machine: "shared", limit: 10_000).filter { $0.kind == "TEST" }
        #expect(events.count == 6 * perThread)
        #expect(Set(events.map(\.detail)).count == 6 * perThread)
        #expect(Set(events.map(\.id)).count == 6 * perThread)
        for t in 0..<6 {
            #expect(try second.points(machine: "m\(t)", limit: 1000).count == perThread)
            #expect(try first.machine(named: "m\(t)")?.lastPoint == UInt64(perThread))
        }
        // 6 tokens per enroll above (7 enrollments) + 3 per thread.
        #expect(try first.enrollmentTokens().count == 7 + 6 * 3)
    }

    @Test("one token redeemed by several threads at once enrolls exactly one machine")
    func oneRedeemWins() throws {
        let f = try CatalogFixture()
        let token = try f.catalog.createEnrollmentToken(validFor: 60)
        let catalog = f.catalog
        let expires = Timestamp(seconds: CatalogFixture.start.seconds + 86400)
        let failures = onThreads(6) { thread in
            try catalog.redeemEnrollmentToken(
                secret: token.secret,
                machine: "m\(thread)",
                certificateSerial: "0\(thread)",
                certificateExpires: expires
            )
        }
        #expect(failures.filter { $0 == nil }.count == 1)
        for failure in failures.compactMap({ $0 }) {
            #expect((failure as? LifeboatError)?.code == "enroll.token-used", "\(failure)")
        }
        let machines = try catalog.machines()
        #expect(machines.count == 1)
        #expect(try catalog.enrollmentTokens().first?.usedBy == machines.first?.name)
    }
}
