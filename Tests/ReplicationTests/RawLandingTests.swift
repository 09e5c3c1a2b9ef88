import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// Pieces sent raw land plain in the store and the server compresses them in the background.
@Suite(.serialized)
struct RawLandingTests {
    /// `lifeboat store stats --json` of the running server's store (a reader beside the server).
    private func stats(_ site: ReplicationSite) throws -> [String: Any] {
        let result = try ReplicationSite.lifeboat(["store", "stats", "--json"] + site.storeArguments)
        try #require(result.status == 0, "\(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    @Test("an agent sending raw: the point is exact at once; the server compresses it in the background; the store verifies")
    func rawThenCompressedInTheBackground() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("raw-1")
        let image = site.dir.child("disk.img")
        let content = TestImage.mixed(size: 48 * MiB, seed: 31)
        try FileTools.write(image, content)

        let run = try site.agentOnce(state: state, volumes: ["disk=" + image], extra: ["--compress", "never"])
        try #require(run.status == 0, "agent failed: \(run.stderr)\n\(site.log())")
        #expect(try site.export(machine: "raw-1", volume: "disk") == content)

        // The compressor looks for work every second between commits; wait for it (a guard, not a timing check).
        var deferred = try stats(site)["deferred_blobs"] as? Int
        let deadline = Date().addingTimeInterval(180)
        while deferred != 0 && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
            deferred = try stats(site)["deferred_blobs"] as? Int
        }
        #expect(deferred == 0, "\(site.log().suffix(2000))")
        let log = site.log()
        let passes = log.split(separator: "\n").filter { $0.contains("compressed deferred blobs") }
        #expect(!passes.isEmpty, "\(log.suffix(2000))")
        #expect(passes.contains { !$0.contains("compressed=0 ") }, "the text runs compress: \(passes)")
        #expect(try site.export(machine: "raw-1", volume: "disk") == content)

        // A later cycle, compressed on the wire, on top of the compressed chunks.
        var changed = content
        let block = [UInt8](repeating: 0x5A, count: 256 * 1024)
        changed.replaceSubrange((8 * MiB)..<(8 * MiB + block.count), with: block)
        try FileTools.write(image, block, at: Int64(8 * MiB))
        let next = try site.agentOnce(state: state, volumes: ["disk=" + image], extra: ["--compress", "always"])
        try #require(next.status == 0, "agent failed: \(next.stderr)")
        #expect(try site.export(machine: "raw-1", volume: "disk") == changed)
        let verify = try ReplicationSite.lifeboat(["store", "verify"] + site.storeArguments)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")

        // Restarted, the server reads the compressed copies (the raw packs are retired, still on disk).
        site.stopServer()
        try site.startServer()
        #expect(try stats(site)["deferred_blobs"] as? Int == 0)
        #expect(try site.export(machine: "raw-1", volume: "disk") == changed)
    }

    @Test("--compress rejects an unknown mode before touching anything")
    func badMode() throws {
        let site = try ReplicationSite()
        let state = site.dir.child("never-enrolled")
        let run = try ReplicationSite.lifeboat(["agent", "run", "--once", "--state", state, "--volume", "d=/dev/null", "--compress", "sometimes"])
        #expect(run.status != 0)
        #expect(run.stderr.contains("--compress must be auto, always or never"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: state))
    }
}
