import LifeboatCore
import LifeboatTesting
import Testing

@testable import Catalog

/// A catalog in a fresh temporary directory with a manual clock at a fixed instant.
final class CatalogFixture {
    static let start = Timestamp(seconds: 1_790_000_000)

    let directory: TemporaryDirectory
    let clock: ManualWallClock
    let path: String
    private(set) var catalog: Catalog

    init() throws {
        directory = try TemporaryDirectory(prefix: "lifeboat-catalog")
        clock = ManualWallClock(Self.start)
        path = directory.child("catalog.sqlite")
        catalog = try Catalog.open(path: path, clock: clock)
    }

    /// Closes and opens the catalog again (as a server restart does).
    func reopen() throws {
        catalog.close()
        catalog = try Catalog.open(path: path, clock: clock)
    }

    /// Creates a token and redeems it for `machine`.
    func enroll(_ machine: String, serial: String) throws {
        let token = try catalog.createEnrollmentToken(validFor: 3600)
        try catalog.redeemEnrollmentToken(
            secret: token.secret,
            machine: machine,
            certificateSerial: serial,
            certificateExpires: Timestamp(seconds: Self.start.seconds + 365 * 86400)
        )
    }

    /// Everything a failed call must leave unchanged.
    func snapshot() throws -> Snapshot {
        Snapshot(
            tokens: try catalog.enrollmentTokens(),
            machines: try catalog.machines(includeRemoved: true),
            revoked: try catalog.revokedSerials(),
            events: try catalog.events(machine: nil, limit: 1000)
        )
    }

    deinit { catalog.close() }
}

struct Snapshot: Equatable {
    var tokens: [EnrollmentTokenRecord]
    var machines: [MachineRecord]
    var revoked: Set<String>
    var events: [MachineEvent]
}

/// Runs `body`, expects a `LifeboatError` with `code`, and returns it.
@discardableResult
func expectError(
    _ code: String,
    sourceLocation: Testing.SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> LifeboatError? {
    do {
        try body()
        Issue.record("expected an error with code \(code), but nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as LifeboatError {
        #expect(
            error.code.rawValue == code,
            "expected \(code), got [\(error.code)] \(error.message)",
            sourceLocation: sourceLocation
        )
        return error
    } catch {
        Issue.record("expected a LifeboatError \(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
