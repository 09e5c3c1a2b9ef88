import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// An initial sync larger than a part lands in several commits; one interrupted by kill -9 resumes after the
/// last part the server acknowledged instead of starting over.
@Suite(.serialized)
struct InitialSyncPartsTests {
    @Test("an initial sync in 4 MiB parts: parts are not recovery points, the final point is exact, nothing is sent twice")
    func inParts() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("parts-1")
        let image = site.dir.child("disk.img")
        let content = TestImage.mixed(size: 24 * MiB, seed: 21)
        try FileTools.write(image, content)

        let run = try site.agentOnce(state: state, volumes: ["disk=" + image], extra: ["--initial-sync-part-mib", "4"])
        try #require(run.status == 0, "agent failed: \(run.stderr)\n\(site.log())")
        #expect(run.stdout.contains("crash-consistent"), "\(run.stdout)")

        let points = try site.points(machine: "parts-1")
        let parts = points.filter { $0["crash_consistent"] as? Bool == false }
        let consistent = points.filter { $0["crash_consistent"] as? Bool == true }
        #expect(parts.count >= 2, "\(points)")
        #expect(consistent.count == 1, "\(points)")
        // `latest` is the consistent point, and it is the image.
        #expect(try site.export(machine: "parts-1", volume: "disk") == content)
        // The parts together carry the data once: what changed against each parent adds up to the image's
        // non-zero bytes (no part was sent again).
        let nonZero = stride(from: 0, to: content.count, by: 4096).filter { start in
            content[start..<min(start + 4096, content.count)].contains { $0 != 0 }
        }.count * 4096
        let changed = points.reduce(0) { $0 + ($1["changed_bytes"] as? Int ?? 0) }
        #expect(changed == nonZero, "changed \(changed) bytes over \(points.count) points, \(nonZero) non-zero bytes")

        // The next cycle is an ordinary incremental one.
        try FileTools.write(image, [UInt8](repeating: 7, count: 4096), at: 4096 * 100)
        let next = try site.agentOnce(state: state, volumes: ["disk=" + image], extra: ["--initial-sync-part-mib", "4"])
        try #require(next.status == 0, "agent failed: \(next.stderr)")
        #expect(next.stdout.contains("4.0 KiB sent"), "\(next.stdout)")
        #expect(try site.export(machine: "parts-1", volume: "disk") == (try FileTools.read(image)))
        let verify = try ReplicationSite.lifeboat(["store", "verify"] + site.storeArguments)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    @Test("kill -9 during an initial sync in parts: the restarted agent sends only what no acknowledged part holds")
    func resumesAfterKill() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("parts-2")
        let image = site.dir.child("disk.img")
        // Random data: 32 MiB that does not compress, sent at 40 Mbit/s (5 MB/s), 4 MiB per part.
        var rng = SeededRandom(seed: 5)
        let content = rng.bytes(32 * MiB)
        try FileTools.write(image, content)
        let agent = try AgentRunner(
            state: state,
            volumes: ["disk=" + image],
            log: site.dir.child("agent-1.log"),
            extra: ["--initial-sync-part-mib", "4", "--throttle-mbps", "40"]
        )
        let twoParts = poll(timeout: 120) { ((try? site.points(machine: "parts-2")) ?? []).count >= 2 }
        try #require(twoParts, "two parts did not land: \(agent.text())\n\(site.log())")
        let state1 = try #require(try site.machine("parts-2"))
        #expect(state1["state"] as? String == "INITIAL_SYNC", "\(state1)")
        agent.kill9()
        let before = try site.points(machine: "parts-2")
        #expect(before.allSatisfy { $0["crash_consistent"] as? Bool == false }, "\(before)")
        let durable = before.reduce(0) { $0 + ($1["changed_bytes"] as? Int ?? 0) }
        #expect(durable >= 8 * MiB)

        // The restart finishes the sync; the parts already durable are not sent again.
        let rest = try site.agentOnce(state: state, volumes: ["disk=" + image], extra: ["--initial-sync-part-mib", "4"])
        try #require(rest.status == 0, "agent failed: \(rest.stderr)\n\(site.log())")
        // What the restarted agent sent, from its log ("bytes=" of every acknowledged commit).
        let sent = rest.stderr.split(separator: "\n").filter { $0.contains("committed") }.compactMap { line -> Int? in
            guard let range = line.range(of: "bytes=") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }.reduce(0, +)
        #expect(sent > 0 && sent <= content.count - durable, "the restart sent \(sent) bytes; \(durable) of \(content.count) were durable before")
        let after = try site.points(machine: "parts-2")
        #expect(after.filter { $0["crash_consistent"] as? Bool == true }.count == 1, "\(after)")
        #expect(try site.export(machine: "parts-2", volume: "disk") == content)
        let machine = try #require(try site.machine("parts-2"))
        #expect(machine["lastPoint"] != nil)
    }
}
