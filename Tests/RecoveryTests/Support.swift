#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import LifeboatCore
import LifeboatTesting
import Logging
import NIOCore
import NIOSSL
import Recovery
import StagingStore
import Testing

/// A store with one committed point of a mixed image (holes, text, random data), an NBD server on loopback,
/// and helpers to run real NBD clients against it.
final class NBDFixture: @unchecked Sendable {
    let dir: TemporaryDirectory
    let store: Store
    let image: [UInt8]
    let machine = "web-1"
    let volume = "root"
    let point: String
    var server: NBDServer

    /// 6 MiB + 1536 bytes: not a multiple of 4 KiB, so the last overlay block is partial.
    static let imageSize = 6 * MiB + 1536

    init(tls: NIOSSLContext? = nil, size: Int = NBDFixture.imageSize, seed: UInt64 = 7) throws {
        dir = try TemporaryDirectory(prefix: "lifeboat-nbd")
        let backend = LocalDirectoryBackend(root: dir.child("store"))
        let key = MasterKeySource.keyFile(path: dir.child("master.key"))
        try Store.create(at: backend, key: key)
        store = try Store.open(backend, key: key, access: .write)
        image = TestImage.mixed(size: size, seed: seed)
        let imagePath = dir.child("source.img")
        try FileTools.write(imagePath, image)
        let commit = try store.ingest(machine: machine, volumes: [(name: volume, path: imagePath)])
        point = "\(commit.id)"
        server = try NBDServer(configuration: .init(tls: tls), logger: Self.logger)
    }

    static var logger: Logger {
        var l = Logger(label: "nbd-test")
        l.logLevel = .warning
        return l
    }

    func pointExport(name: String = "point") throws -> PointExport {
        try PointExport(name: name, store: store, machine: machine, volume: volume, point: point)
    }

    var port: Int { server.port ?? 0 }

    func uri(_ export: String) -> String { "nbd://127.0.0.1:\(port)/\(export)" }

    /// `lifeboat store export` of the point, as a raw file.
    func exportedImage() throws -> String {
        let path = dir.child("exported-\(UInt64.random(in: 0...UInt64.max)).img")
        try store.export(try store.reader(machine: machine, volume: volume, point: point), to: path)
        return path
    }

    func path(_ name: String) -> String { dir.child(name) }

    func close() async throws {
        try await server.close()
        store.close()
    }
}

/// Runs a program and records an issue with its output when it fails.
@discardableResult
func run(
    _ program: String,
    _ arguments: [String],
    expectSuccess: Bool = true,
    sourceLocation: Testing.SourceLocation = #_sourceLocation
) throws -> ProcessResult {
    let result = try Processes.run(program, arguments)
    if expectSuccess && result.status != 0 {
        Issue.record(
            "\(program) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)\(result.stdout)",
            sourceLocation: sourceLocation
        )
    }
    return result
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

/// Negotiation helpers for the pure tests.
enum Client {
    static func flags(_ value: UInt32 = NBD.ClientFlags.fixedNewstyle | NBD.ClientFlags.noZeroes) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(value)
        return b
    }

    static func option(_ option: UInt32, _ data: ByteBuffer = ByteBuffer()) -> ByteBuffer {
        var b = ByteBuffer()
        NBDWire.encode(NBDOptionRequest(option: option, data: data), into: &b)
        return b
    }

    /// INFO/GO data: name and requested info types.
    static func infoData(_ name: String, _ infos: [UInt16] = []) -> ByteBuffer {
        var d = ByteBuffer()
        d.writeInteger(UInt32(name.utf8.count))
        d.writeString(name)
        d.writeInteger(UInt16(infos.count))
        for i in infos { d.writeInteger(i) }
        return d
    }

    static func metaData(_ name: String, _ queries: [String]) -> ByteBuffer {
        var d = ByteBuffer()
        d.writeInteger(UInt32(name.utf8.count))
        d.writeString(name)
        d.writeInteger(UInt32(queries.count))
        for q in queries {
            d.writeInteger(UInt32(q.utf8.count))
            d.writeString(q)
        }
        return d
    }
}

/// An option reply decoded from server bytes.
struct OptionReply: Equatable {
    var option: UInt32
    var type: UInt32
    var data: ByteBuffer

    /// Decodes every option reply in `buffer`.
    static func all(in buffer: ByteBuffer) -> [OptionReply] {
        var b = buffer
        var out: [OptionReply] = []
        while b.readableBytes >= 20 {
            let magic: UInt64 = b.readInteger()!
            precondition(magic == NBD.optionReplyMagic, "not an option reply")
            let option: UInt32 = b.readInteger()!
            let type: UInt32 = b.readInteger()!
            let length: UInt32 = b.readInteger()!
            out.append(OptionReply(option: option, type: type, data: b.readSlice(length: Int(length))!))
        }
        precondition(b.readableBytes == 0, "trailing bytes")
        return out
    }
}
