import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// From `server init` to acknowledged recovery points, through the real binary over real TLS.
@Suite(.serialized)
struct ReplicationFlowTests {
    @Test("enroll, replicate an image, change it, replicate again: every point is exact and only changes travel")
    func enrollAndReplicate() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("web-1")
        #expect(try FileTools.mode(state + "/agent.key") & 0o777 == 0o600)

        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: 24 * MiB + 4096, seed: 3))
        let first = try site.agentOnce(state: state, volumes: ["disk=" + image])
        try #require(first.status == 0, "agent failed: \(first.stderr)\n\(site.log())")
        #expect(first.stdout.contains("crash-consistent"))
        #expect(try site.export(machine: "web-1", volume: "disk") == (try FileTools.read(image)))

        // A few scattered writes: the next cycle sends about that much, not the volume.
        var rng = SeededRandom(seed: 9)
        for block in [3, 700, 4000, 6000] { try FileTools.write(image, rng.bytes(4096), at: Int64(block * 4096)) }
        let second = try site.agentOnce(state: state, volumes: ["disk=" + image])
        try #require(second.status == 0, "agent failed: \(second.stderr)")
        #expect(second.stdout.contains("16.0 KiB sent"), "\(second.stdout)")
        #expect(try site.export(machine: "web-1", volume: "disk") == (try FileTools.read(image)))

        // Both points stay readable, the first as it was.
        let points = try site.points(machine: "web-1")
        #expect(points.count == 2)

        let machine = try #require(try site.machine("web-1"))
        // `--once` ends with a clean goodbye: no agent is connected now.
        #expect(machine["state"] as? String == "DISCONNECTED")
        #expect(machine["connected"] as? Bool == false)
        #expect((machine["lagSeconds"] as? Double).map { $0 >= 0 && $0 < 120 } == true)
        #expect(machine["lastPoint"] != nil)
        #expect((machine["volumes"] as? [[String: Any]])?.first?["size"] as? Int == 24 * MiB + 4096)

        let verify = try ReplicationSite.lifeboat(["store", "verify"] + site.storeArguments)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    @Test("a token works once, an expired or foreign token is refused, a removed machine's agent is refused")
    func enrollmentRefusals() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let token = try site.token()
        let a = site.dir.child("a")
        let ok = try ReplicationSite.lifeboat(["agent", "enroll", "--server", site.address, "--token", token, "--state", a, "--name", "m-a"])
        #expect(ok.status == 0, "\(ok.stderr)")
        let again = try ReplicationSite.lifeboat(["agent", "enroll", "--server", site.address, "--token", token, "--state", site.dir.child("b"), "--name", "m-b"])
        #expect(again.status != 0)
        #expect(again.stderr.contains("used"), "\(again.stderr)")

        let garbled = try ReplicationSite.lifeboat(["agent", "enroll", "--server", site.address, "--token", "lbt1-abc", "--state", site.dir.child("c"), "--name", "m-c"])
        #expect(garbled.status != 0)
        #expect(garbled.stderr.contains("token"))

        // A token whose CA fingerprint is not this server's: the agent refuses the server (pin mismatch).
        let parts = try site.token().split(separator: "-")
        let foreign = "lbt1-\(parts[1])-" + String(repeating: "ab", count: 32)
        let pinned = try ReplicationSite.lifeboat(["agent", "enroll", "--server", site.address, "--token", foreign, "--state", site.dir.child("d"), "--name", "m-d"])
        #expect(pinned.status != 0)
        #expect(!FileManager.default.fileExists(atPath: site.dir.child("d") + "/agent.pem"))

        // Removing the machine revokes its certificate: its agent is refused with a clear message.
        let image = site.dir.child("small.img")
        try FileTools.write(image, TestImage.mixed(size: 2 * MiB, seed: 1))
        let before = try site.agentOnce(state: a, volumes: ["disk=" + image])
        #expect(before.status == 0, "\(before.stderr)")
        let removed = try ReplicationSite.lifeboat(["machines", "remove", "m-a", "--data", site.data])
        #expect(removed.status == 0, "\(removed.stderr)")
        let after = try site.agentOnce(state: a, volumes: ["disk=" + image])
        #expect(after.status != 0)
        #expect(after.stderr.contains("revoked"), "\(after.stderr)")
        #expect(site.log().contains("refused: revoked or superseded certificate"))
    }

    @Test("plain TCP and garbage are refused and logged; the server keeps serving others")
    func plainTCPRefused() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        // A HELLO frame in clear text: the TLS handshake fails, the server closes.
        let python = """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
            s.sendall(bytes.fromhex("0000000a01000100000000000000") + b"\\x00" * 64)
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk: break
                    data += chunk
            except Exception:
                pass
            print("closed", len(data))
            """
        let r = try Processes.run("/usr/bin/python3", ["-c", python, site.port])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("closed"))
        // The server logged the refusal and still enrolls and replicates.
        let state = try site.enroll("after-garbage")
        let image = site.dir.child("x.img")
        try FileTools.write(image, TestImage.mixed(size: 1 * MiB, seed: 2))
        #expect(try site.agentOnce(state: state, volumes: ["disk=" + image]).status == 0)
        #expect(site.log().contains("connection refused or failed"))
    }
}
