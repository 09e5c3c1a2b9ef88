import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// An operator pauses and resumes a machine's replication while its agent runs: the server sends the change to
/// the connected agent within seconds, the state shows PAUSED, nothing is committed while paused, and after
/// the resume only the changes made in between travel.
@Suite(.serialized)
struct PauseTests {
    @Test("pause: state PAUSED, agent connected, no commits; resume: the changes follow without a resync")
    func pauseAndResume() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("db-1")
        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: 16 * MiB, seed: 5))

        let agent = try AgentRunner(state: state, volumes: ["disk=" + image], log: site.dir.child("agent.log"), interval: 0.3)
        defer { agent.stop() }
        try #require(try site.waitForLatest(equalTo: image, machine: "db-1", volume: "disk", timeout: 90) != nil, "initial sync")

        let pause = try ReplicationSite.lifeboat(["machines", "pause", "db-1", "--data", site.data])
        try #require(pause.status == 0, "\(pause.stderr)")
        let paused = site.waitForState("db-1", "PAUSED", connected: true, timeout: 30)
        try #require(paused.ok, "state after pause: \(paused.last ?? [:])\n\(site.log())")
        #expect(paused.last?["paused"] as? Bool == true)
        #expect((paused.last?["stateReason"] as? String)?.contains("lifeboat machines resume db-1") == true)
        #expect(site.log().contains("settings sent to the agent"))

        // Changes while paused are not replicated; the agent stays connected and idle.
        let pointsWhenPaused = try site.points(machine: "db-1").count
        var rng = SeededRandom(seed: 11)
        for block in [1, 900, 3000] { try FileTools.write(image, rng.bytes(4096), at: Int64(block * 4096)) }
        sleep(seconds: 4)
        #expect(try site.points(machine: "db-1").count == pointsWhenPaused, "no commit while paused")
        #expect(agent.isRunning)
        #expect(try site.machine("db-1")?["state"] as? String == "PAUSED")

        let resume = try ReplicationSite.lifeboat(["machines", "resume", "db-1", "--data", site.data])
        try #require(resume.status == 0, "\(resume.stderr)")
        let point = try site.waitForLatest(equalTo: image, machine: "db-1", volume: "disk", timeout: 60)
        try #require(point != nil, "the changes made while paused arrive after the resume\n\(site.log())")
        let resumed = site.waitForState("db-1", "CONTINUOUS", connected: true, timeout: 30)
        #expect(resumed.ok, "\(resumed.last ?? [:])")
        #expect(resumed.last?["paused"] as? Bool == false)
        // Only the three changed blocks travelled after the resume: the point with them changed 12 KiB.
        let changed = try site.changedBytes(machine: "db-1").filter { $0.bytes > 0 }
        #expect(changed.last?.bytes == 3 * 4096, "\(changed)")
        let verify = try site.verify()
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    @Test("`agent run --once` for a paused machine fails with a clear message and changes nothing")
    func onceWhilePaused() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("db-2")
        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: 4 * MiB, seed: 6))
        let pause = try ReplicationSite.lifeboat(["machines", "pause", "db-2", "--data", site.data])
        try #require(pause.status == 0, "\(pause.stderr)")

        let once = try site.agentOnce(state: state, volumes: ["disk=" + image])
        #expect(once.status != 0)
        #expect(once.stderr.contains("paused on the server"), "\(once.stderr)")
        #expect(once.stderr.contains("lifeboat machines resume db-2"), "\(once.stderr)")
        #expect(try site.points(machine: "db-2").isEmpty)

        let unknown = try ReplicationSite.lifeboat(["machines", "pause", "nobody", "--data", site.data])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("nobody"), "\(unknown.stderr)")

        let resume = try ReplicationSite.lifeboat(["machines", "resume", "db-2", "--data", site.data])
        try #require(resume.status == 0)
        let after = try site.agentOnce(state: state, volumes: ["disk=" + image])
        #expect(after.status == 0, "\(after.stderr)")
        #expect(try site.export(machine: "db-2", volume: "disk") == (try FileTools.read(image)))
    }
}
