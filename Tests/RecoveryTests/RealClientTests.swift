import Foundation
import LifeboatCore
import LifeboatTesting
import NIOCore
import Recovery
import StagingStore
import Testing

@Suite("NBD server against real clients: qemu-img, nbdinfo, nbdcopy")
struct RealClientTests {
    /// A fixture with the point registered read-only as "point" and a second export "other".
    func started() async throws -> NBDFixture {
        let f = try NBDFixture()
        try f.server.register(try f.pointExport(name: "point"))
        try f.server.register(try f.pointExport(name: "other"))
        try await f.server.start()
        return f
    }

    @Test("qemu-img info, convert and compare: the export is byte-identical to `store export`")
    func qemuImg() async throws {
        let f = try await started()
        let info = try run("/usr/bin/qemu-img", ["info", "--output=json", f.uri("point")])
        let json = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
        #expect((json?["virtual-size"] as? Int) == NBDFixture.imageSize)

        let exported = try f.exportedImage()
        let converted = f.path("converted.raw")
        try run("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", "raw", f.uri("point"), converted])
        expectSameBytes(try FileTools.read(converted), try FileTools.read(exported), "qemu-img convert vs store export")
        expectSameBytes(try FileTools.read(converted), f.image, "qemu-img convert vs source image")

        let compare = try run("/usr/bin/qemu-img", ["compare", "-f", "raw", "-F", "raw", f.uri("point"), exported])
        #expect(compare.stdout.contains("Images are identical"))
        try await f.close()
    }

    @Test("qemu-img map and nbdinfo --map report the store's holes as zero, the rest as data")
    func allocationMaps() async throws {
        let f = try await started()
        let reader = try f.store.reader(machine: f.machine, volume: f.volume, point: f.point)
        let segment = StoreFormat.segmentSize
        let segments = (NBDFixture.imageSize + segment - 1) / segment
        let holes = try (0..<segments).map { try reader.isHole(segment: $0) }
        #expect(holes.contains(true) && holes.contains(false), "the image has both holes and data")

        let map = try run("/usr/bin/qemu-img", ["map", "--output=json", "-f", "raw", f.uri("point")])
        let entries = try JSONSerialization.jsonObject(with: Data(map.stdout.utf8)) as? [[String: Any]] ?? []
        var reported = [Bool?](repeating: nil, count: segments)
        var covered = 0
        for e in entries {
            let start = e["start"] as? Int ?? -1
            let length = e["length"] as? Int ?? 0
            let data = e["data"] as? Bool ?? true
            let zero = e["zero"] as? Bool ?? false
            #expect(start == covered, "map entries are contiguous")
            covered = start + length
            if !data { #expect(zero, "an unallocated range reads as zero") }
            var s = start / segment
            while s * segment < start + length && s < segments {
                reported[s] = !data
                s += 1
            }
        }
        #expect(covered == NBDFixture.imageSize)
        #expect(reported.map { $0 ?? false } == holes, "qemu-img map: holes exactly where the store has hole segments")

        let nbdinfo = try run("/usr/bin/nbdinfo", ["--map", f.uri("point")])
        var total = 0
        var holeBytes = 0
        for line in nbdinfo.stdout.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, let length = Int(fields[1]) else { continue }
            total += length
            if fields.count >= 4 && fields[3].contains("hole") { holeBytes += length }
        }
        #expect(total == NBDFixture.imageSize)
        let expectedHoleBytes = holes.enumerated().reduce(0) { sum, item in
            item.element ? sum + min(segment, NBDFixture.imageSize - item.offset * segment) : sum
        }
        #expect(holeBytes == expectedHoleBytes)
        try await f.close()
    }

    @Test("nbdinfo --list names every export; nbdinfo shows the size")
    func nbdinfoList() async throws {
        let f = try await started()
        let list = try run("/usr/bin/nbdinfo", ["--list", "nbd://127.0.0.1:\(f.port)"])
        #expect(list.stdout.contains("export=\"point\""))
        #expect(list.stdout.contains("export=\"other\""))
        let size = try run("/usr/bin/nbdinfo", ["--size", f.uri("point")])
        #expect(size.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(NBDFixture.imageSize)")
        try await f.close()
    }

    @Test("nbdcopy with 16 requests in flight (and multi-conn) copies byte-identically")
    func nbdcopy() async throws {
        let f = try await started()
        let out = f.path("nbdcopy.raw")
        try run("/usr/bin/nbdcopy", ["--requests=16", f.uri("point"), out])
        expectSameBytes(try FileTools.read(out), f.image, "nbdcopy output")
        let single = f.path("nbdcopy-1.raw")
        try run("/usr/bin/nbdcopy", ["--connections=1", "--requests=64", "--request-size=65536", f.uri("other"), single])
        expectSameBytes(try FileTools.read(single), f.image, "nbdcopy (one connection) output")
        try await f.close()
    }

    @Test("a WRITE to a read-only export gets EPERM; qemu-io reports an error; the server keeps serving")
    func readOnly() async throws {
        let f = try await started()
        let client = try RawClient(port: f.port)
        #expect(try client.handshake(export: "point") == UInt64(NBDFixture.imageSize))
        let reply = try client.request(
            NBDRequest(type: NBD.Command.write, cookie: 1, offset: 0, length: 4096),
            payload: [UInt8](repeating: 1, count: 4096)
        )
        #expect(reply?.error == NBD.ReplyError.permission)
        let beyond = try client.request(NBDRequest(type: NBD.Command.read, cookie: 2, offset: UInt64(NBDFixture.imageSize), length: 512))
        #expect(beyond?.error == NBD.ReplyError.invalid)
        let read = try client.request(NBDRequest(type: NBD.Command.read, cookie: 3, offset: 100, length: 1000))
        #expect(read?.error == 0)
        #expect(read?.data == Array(f.image[100..<1100]))

        let io = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -P 0xab 0 4096", f.uri("point")], expectSuccess: false)
        #expect(io.status != 0 || (io.stdout + io.stderr).lowercased().contains("read-only") || (io.stdout + io.stderr).contains("not permitted"))
        let compare = try run("/usr/bin/qemu-img", ["compare", "-f", "raw", "-F", "raw", f.uri("point"), try f.exportedImage()])
        #expect(compare.status == 0)
        try await f.close()
    }

    @Test("64 pipelined READs on one connection are all answered, each matched by its cookie")
    func pipelinedRequests() async throws {
        let f = try await started()
        let client = try RawClient(port: f.port)
        _ = try client.handshake(export: "point")
        var rng = SeededRandom(seed: 5)
        var requests: [UInt64: NBDRequest] = [:]
        var batch = ByteBuffer()
        for cookie in 1...64 {
            let length = 1 + rng.below(256 * 1024)
            let offset = rng.below(NBDFixture.imageSize - length)
            let r = NBDRequest(type: NBD.Command.read, cookie: UInt64(cookie) << 32, offset: UInt64(offset), length: UInt32(length))
            requests[r.cookie] = r
            NBDWire.encode(r, into: &batch)
        }
        try client.send(batch)
        var answered = Set<UInt64>()
        for _ in 0..<64 {
            guard var header = try client.receive(16) else {
                Issue.record("the server closed the connection")
                break
            }
            #expect(header.readInteger(as: UInt32.self) == NBD.simpleReplyMagic)
            #expect(header.readInteger(as: UInt32.self) == 0)
            let cookie: UInt64 = header.readInteger()!
            guard let r = requests[cookie], !answered.contains(cookie) else {
                Issue.record("unexpected cookie \(cookie)")
                break
            }
            answered.insert(cookie)
            let data = try client.receive(Int(r.length))
            #expect(data.map { Array($0.readableBytesView) } == Array(f.image[Int(r.offset)..<(Int(r.offset) + Int(r.length))]))
        }
        #expect(answered.count == 64)
        try await f.close()
    }

    @Test("garbage after the handshake closes only that connection")
    func malformedFrames() async throws {
        let f = try await started()
        let bad = try RawClient(port: f.port)
        _ = try bad.handshake(export: "point")
        let good = try RawClient(port: f.port)
        _ = try good.handshake(export: "other")
        try bad.send(ByteBuffer(repeating: 0x5A, count: 64))
        #expect(try bad.isClosedByServer())
        let read = try good.request(NBDRequest(type: NBD.Command.read, cookie: 9, offset: 0, length: 4096))
        #expect(read?.data == Array(f.image[0..<4096]))

        let garbageHandshake = try RawClient(port: f.port)
        _ = try garbageHandshake.receive(18)
        var junk = Client.flags()
        junk.writeRepeatingByte(0xFF, count: 40)
        try garbageHandshake.send(junk)
        #expect(try garbageHandshake.isClosedByServer())
        try await f.close()
    }

    @Test("an unknown export is refused; registering twice fails; unregistered exports disappear")
    func registry() async throws {
        let f = try await started()
        let info = try run("/usr/bin/nbdinfo", [f.uri("nope")], expectSuccess: false)
        #expect(info.status != 0)
        #expect(throws: LifeboatError.self) { try f.server.register(try f.pointExport(name: "point")) }
        #expect(f.server.unregister(name: "other") != nil)
        let list = try run("/usr/bin/nbdinfo", ["--list", "nbd://127.0.0.1:\(f.port)"])
        #expect(!list.stdout.contains("export=\"other\""))
        try await f.close()
    }

    @Test("a non-loopback address without TLS is refused with a clear error")
    func nonLoopbackNeedsTLS() throws {
        do {
            _ = try NBDServer(configuration: .init(host: "0.0.0.0"), logger: NBDFixture.logger)
            Issue.record("binding 0.0.0.0 without TLS should fail")
        } catch let error as LifeboatError {
            #expect(error.code == "nbd.tls-required")
            #expect(error.message.contains("TLS"))
        }
    }
}
