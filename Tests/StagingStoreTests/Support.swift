import LifeboatCore
import LifeboatTesting
import StagingStore
import Testing

let blockSize = 4096

/// A store in its own temporary directory, with a key file and a manual clock.
final class StoreFixture {
    let dir: TemporaryDirectory
    let root: String
    let keyPath: String
    let clock: ManualWallClock

    /// 2026-09-22T00:00:00Z: a midnight, so that simulated days start at a day boundary.
    static let defaultStart = Timestamp(seconds: 1_790_035_200)

    init(start: Timestamp = StoreFixture.defaultStart, create: Bool = true) throws {
        dir = try TemporaryDirectory()
        root = dir.child("store")
        keyPath = dir.child("master.key")
        clock = ManualWallClock(start)
        if create {
            try Store.create(at: backend, key: key, clock: clock)
        }
    }

    var key: MasterKeySource { .keyFile(path: keyPath) }
    var backend: LocalDirectoryBackend { LocalDirectoryBackend(root: root) }
    var files: StoreFiles { StoreFiles(root: root) }

    func open(_ access: Store.Access = .write) throws -> Store {
        try Store.open(backend, key: key, access: access, clock: clock)
    }

    /// A path in the fixture's directory (outside the store).
    func path(_ name: String) -> String { dir.child(name) }

    /// Writes an image file and returns its path.
    @discardableResult
    func writeImage(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = path(name)
        try FileTools.write(p, bytes)
        return p
    }

    private var exportCounter = 0

    /// Exports a volume at a point and returns the exported file's bytes (the file is removed).
    func exported(_ store: Store, machine: String, volume: String, point: String) throws -> [UInt8] {
        exportCounter += 1
        let out = path("export-\(exportCounter).img")
        let reader = try store.reader(machine: machine, volume: volume, point: point)
        try store.export(reader, to: out)
        defer { try? FileTools.removeFile(out) }
        #expect(!FileTools.exists(out + ".partial"))
        return try FileTools.read(out)
    }
}

/// Reads `count` bytes at `offset` through a reader.
func read(_ reader: VolumeReader, at offset: Int64, count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0xA5, count: count)
    try out.withUnsafeMutableBytes { try reader.read(at: offset, into: $0) }
    return out
}

/// Runs `body` and checks that it throws a `LifeboatError` with `code`; returns the error.
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

/// Checks byte equality and reports the first differing offset instead of dumping megabytes.
func expectSameBytes(
    _ actual: [UInt8],
    _ expected: [UInt8],
    _ what: String,
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) {
    if let at = ByteCompare.firstDifference(actual, expected) {
        Issue.record(
            "\(what): differs at byte \(at) (sizes \(actual.count) vs expected \(expected.count))",
            sourceLocation: sourceLocation
        )
    }
}

/// The number of 4 KiB blocks that differ between two images of the same size (a partial last block
/// counts as one block).
func changedBlocks(_ a: [UInt8], _ b: [UInt8]) -> Int {
    precondition(a.count == b.count)
    var n = 0
    var offset = 0
    while offset < a.count {
        let end = min(offset + blockSize, a.count)
        if a[offset..<end] != b[offset..<end] { n += 1 }
        offset = end
    }
    return n
}

/// The number of 4 KiB blocks of an image that hold a non-zero byte.
func nonZeroBlocks(_ a: [UInt8]) -> Int {
    changedBlocks(a, [UInt8](repeating: 0, count: a.count))
}
