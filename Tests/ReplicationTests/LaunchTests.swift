import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// Launching recovery machines with the real binary end to end: a bootable disk is protected by a real agent,
/// the running server launches it in QEMU (TCG here) over NBD through copy-on-write overlays, acceptance checks
/// prove it, terminate releases everything; the command launcher drives an operator's script.
@Suite("Launch recovery machines", .serialized)
struct LaunchTests {
    /// Seconds the checks may take: far above a boot's 11–15 s, so that a loaded machine (the whole suite on 2
    /// cores) does not fail a drill that is only slow.
    static let checkTimeout = "300"

    // MARK: - The end-to-end drill

    @Test("drills from an earlier point and from latest serve each point's content; terminate leaves source and store unchanged")
    func drillFromTwoPoints() async throws {
        let site = try LaunchSite()
        defer { site.stop() }
        let outside = try HostListener()
        defer { outside.stop() }

        // Protect the disk, change the served file on the source, protect again.
        let first = try site.protect(text: "lifeboat drill v1\n")
        try BootDisk.replaceServedText(image: site.image, text: "lifeboat drill v2\n")
        let second = try site.replicate()
        #expect(first != second, "the second replication made a new point")
        let sourceBefore = ByteCompare.fnv1a(try FileTools.read(site.image))
        let exportFirst = try site.export(point: first, name: "first")
        let exportSecond = try site.export(point: second, name: "second")

        try site.configure([
            "--memory", "256", "--check", "serial:LIFEBOAT-READY", "--check", "http:80:/index.html:200:lifeboat drill v",
            "--check", "serial:LIFEBOAT-EGRESS blocked", "--check-timeout", Self.checkTimeout,
            "--qemu-arg", "-smbios", "--qemu-arg", "type=11,value=lifeboat-egress=10.0.2.2:\(outside.port)",
        ])

        // Two drills at once: the earlier point and latest.
        let jobA = try site.queueLaunch(["--mode", "test", "--point", first, "web"])
        let jobB = try site.queueLaunch(["--mode", "test", "--point", "latest", "web"])
        let doneA = try site.follow(jobA)
        let doneB = try site.follow(jobB)
        for (job, point) in [(doneA, first), (doneB, second)] {
            let item = try #require((job["items"] as? [[String: Any]])?.first)
            #expect(job["status"] as? String == "COMPLETED")
            #expect(item["launchStatus"] as? String == "LAUNCHED", "job \(job["id"] ?? ""): \(item["error"] ?? "") \(site.console(item["instance"])) \(site.log())")
            #expect(item["point"] as? String == point)
            #expect((item["rtoSeconds"] as? Double ?? 0) > 0, "the job records a measured RTO")
            let kinds = (job["events"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String }
            let expected = [
                "JOB_START", "SNAPSHOT_START", "SNAPSHOT_END", "CONVERSION_START", "CONVERSION_END", "LAUNCH_START",
                "MACHINE_STARTED", "CHECK_PASSED", "LAUNCH_END", "JOB_END",
            ]
            #expect(kinds.filter { expected.contains($0) }.uniqued() == expected, "event order: \(kinds)")
            #expect(kinds.filter { $0 == "CHECK_PASSED" }.count == 3)
            let console = (job["events"] as? [[String: Any]] ?? []).first { $0["kind"] as? String == "CONSOLE" }
            let consoleText = console?["detail"] as? String ?? ""
            #expect(consoleText.contains("LIFEBOAT-READY"), "the serial console is in the job log")
        }

        // Each instance serves its point's file through its forwarded port.
        let instances = try site.instances()
        #expect(instances.count == 2)
        let byPoint = Dictionary(instances.map { ($0["point"] as? String ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        let pageA = try site.get(instance: try #require(byPoint[first]), path: "/index.html")
        let pageB = try site.get(instance: try #require(byPoint[second]), path: "/index.html")
        #expect(pageA == "lifeboat drill v1\n")
        #expect(pageB == "lifeboat drill v2\n")
        #expect(outside.connections == 0, "a drill reached a host port")
        #expect(try site.pinnedPoints() == Set([first, second]), "both launched points are pinned")
        let machine = try #require(try site.machine("web"))
        #expect(machine["drLifecycle"] as? String == "TESTED_RECENTLY")
        #expect(machine["lastDrillPassedAt"] as? String != nil)

        // Terminate both: machines stop, overlays go, points are unpinned.
        let ids = instances.compactMap { $0["id"] as? String }
        let terminated = try site.lifeboat(["instances", "terminate"] + ids)
        #expect(terminated.status == 0, "terminate: \(terminated.stdout) \(terminated.stderr)")
        #expect(try site.instances().isEmpty)
        for id in ids {
            #expect(!site.vmRunning(id), "QEMU of \(id) still runs")
            #expect(!FileTools.exists(site.data + "/instances/\(id)/disks"), "the overlay of \(id) was dropped")
        }
        #expect(try site.instances(all: true).allSatisfy { $0["state"] as? String == "TERMINATED" })
        #expect(try site.pinnedPoints().isEmpty, "terminate unpinned the points")

        // Source and store unchanged by the drills.
        #expect(ByteCompare.fnv1a(try FileTools.read(site.image)) == sourceBefore, "the source disk changed")
        expectSame(try FileTools.read(try site.export(point: first, name: "first-after")), try FileTools.read(exportFirst), "point \(first)")
        expectSame(try FileTools.read(try site.export(point: second, name: "second-after")), try FileTools.read(exportSecond), "point \(second)")
        site.site.stopServer()
        let verify = try site.lifeboat(["store", "verify"] + site.site.storeArguments)
        #expect(verify.status == 0, "store verify: \(verify.stdout) \(verify.stderr)")
    }

    // MARK: - Failures

    @Test("a check that never passes: LAUNCH_FAILED, TEST_FAILED, and the machine, overlay and pin are released")
    func failedCheckReleasesEverything() async throws {
        let site = try LaunchSite()
        defer { site.stop() }
        let point = try site.protect(text: "lifeboat fixture v1\n")
        try site.configure([
            "--memory", "256", "--check", "serial:LIFEBOAT-READY", "--check", "http:80:/index.html:200:text that is not served",
            "--check-timeout", "40",
        ])
        let result = try site.lifeboat(["launch", "--mode", "test", "web", "--wait", "--json"])
        #expect(result.status == 1, "launch --wait exits 1 when a machine failed")
        let job = try site.parse(result.stdout)
        let item = try #require((job["items"] as? [[String: Any]])?.first)
        #expect(item["launchStatus"] as? String == "FAILED")
        #expect((item["error"] as? String ?? "").contains("http:80:/index.html:200:text that is not served"), "\(item)")
        let events = job["events"] as? [[String: Any]] ?? []
        let kinds = events.compactMap { $0["kind"] as? String }
        #expect(kinds.contains("CHECK_PASSED"), "the serial check passed first: \(kinds)")
        #expect(kinds.contains("CHECK_FAILED") && kinds.contains("LAUNCH_FAILED"), "\(kinds)")
        let failed = events.first { $0["kind"] as? String == "CHECK_FAILED" }
        let failedError = failed?["error"] as? String ?? ""
        #expect(failedError.contains("does not match"), "the job log says why: \(failed ?? [:])")
        let instance = try #require(try site.instances(all: true).first)
        let id = try #require(instance["id"] as? String)
        #expect(instance["state"] as? String == "FAILED")
        #expect(!site.vmRunning(id))
        #expect(!FileTools.exists(site.data + "/instances/\(id)/disks"))
        #expect(FileTools.exists(site.data + "/instances/\(id)/console.log"), "the console log stays for the post-mortem")
        #expect(try site.pinnedPoints().isEmpty, "the point \(point) was unpinned")
        #expect(try site.machine("web")?["drLifecycle"] as? String == "TEST_FAILED")
    }

    @Test("bad input is refused with a clear error and queues nothing")
    func badInputChangesNothing() async throws {
        let site = try LaunchSite()
        defer { site.stop() }
        _ = try site.protect(text: "lifeboat fixture v1\n")
        let cases: [([String], String)] = [
            (["launch", "--mode", "test", "nosuchmachine"], "no machine named nosuchmachine"),
            (["launch", "--mode", "test", "--point", "2001-01-01T00:00:00Z", "web"], "point"),
            (["launch", "--mode", "test", "--point", "ffffffffffffffff", "web"], "point"),
            (["launch", "--mode", "drill", "web"], "--mode"),
            (["launch", "--mode", "test"], "name the machines"),
            (["launch", "--mode", "test", "--application", "nothing"], "there is no application nothing"),
            (["machines", "configure", "web", "--check", "bogus:1"], "unknown kind"),
            (["machines", "configure", "web", "--check", "http:80:index.html"], "path starting with '/'"),
            (["machines", "configure", "web", "--check", "serial:("], "not a valid regular expression"),
            (["machines", "configure", "web", "--memory", "1"], "memory"),
            (["machines", "configure", "web", "--launcher", "command"], "--launcher-command"),
            (["machines", "configure", "web", "--recovery-network", "wifi"], "recovery network"),
            (["instances", "terminate", "ri-0000000000000000"], "no recovery instance"),
            (["jobs", "job-0000000000000000"], "no job"),
        ]
        let before = try site.machine("web")?["launchSettings"] as? [String: Any]
        for (arguments, message) in cases {
            let r = try site.lifeboat(arguments)
            #expect(r.status != 0, "\(arguments) should fail")
            #expect(r.stderr.contains(message), "\(arguments): stderr \(r.stderr)")
        }
        let jobs = try site.parseArray(try site.lifeboat(["jobs", "--json"]).stdout)
        #expect(jobs.isEmpty, "no job was queued: \(jobs)")
        let after = try site.machine("web")?["launchSettings"] as? [String: Any]
        #expect(NSDictionary(dictionary: before ?? [:]).isEqual(to: after ?? [:]), "settings unchanged by refused configures")
    }

    // MARK: - The command launcher

    @Test("the command launcher gets JSON on stdin, its output and status go to the job log, terminate calls it back")
    func commandLauncher() async throws {
        let site = try LaunchSite()
        defer { site.stop() }
        let point = try site.protect(text: "lifeboat fixture v1\n")
        let script = site.dir.child("launcher.py")
        try FileTools.write(script, Array(Self.launcherScript.utf8), mode: 0o755)
        let size = try FileTools.size(site.image)
        try site.configure([
            "--launcher", "command", "--launcher-command", script,
            "--check", "serial:READY size=\(size)", "--check", "command:test -s \"$LIFEBOAT_CONSOLE\"", "--check-timeout", "30",
        ])
        let result = try site.lifeboat(["launch", "--mode", "test", "web", "--wait", "--json"])
        let job = try site.parse(result.stdout)
        let item = try #require((job["items"] as? [[String: Any]])?.first)
        #expect(item["launchStatus"] as? String == "LAUNCHED", "\(item) \(site.console(item["instance"])) \(site.log())")
        let details = (job["events"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "LAUNCHER_OUTPUT" }
            .compactMap { $0["detail"] as? String }
        #expect(details.contains { $0.contains("disk of \(size) bytes over NBD") }, "its stdout is in the job log: \(details)")
        #expect(details.contains { $0.hasSuffix("exited 0") }, "its exit status is in the job log: \(details)")

        // What it received.
        let instance = try #require(try site.instances().first)
        let id = try #require(instance["id"] as? String)
        let actions = try String(contentsOfFile: site.data + "/instances/\(id)/actions.log", encoding: .utf8)
            .split(separator: "\n").map { try site.parse(String($0)) }
        let request = try #require(actions.first)
        #expect(request["action"] as? String == "launch")
        #expect(request["machine"] as? String == "web")
        #expect(request["mode"] as? String == "TEST")
        #expect((request["point"] as? [String: Any])?["id"] as? String == point)
        let disk = try #require((request["disks"] as? [[String: Any]])?.first)
        #expect((disk["nbdURI"] as? String ?? "").hasPrefix("nbd://127.0.0.1:"))
        #expect((request["network"] as? [String: Any])?["isolated"] as? Bool == true)

        // Terminate hands back what it answered.
        let terminated = try site.lifeboat(["instances", "terminate", id])
        #expect(terminated.status == 0, "\(terminated.stdout) \(terminated.stderr)")
        let all = try String(contentsOfFile: site.data + "/instances/\(id)/actions.log", encoding: .utf8)
            .split(separator: "\n").map { try site.parse(String($0)) }
        #expect(all.count == 2)
        #expect(all.last?["action"] as? String == "terminate")
        let handedBack = (all.last?["launched"] as? [String: Any])?["console"] as? String ?? ""
        #expect(handedBack.hasSuffix("console.log"), "terminate got the launch answer back: \(all.last ?? [:])")
        #expect(try site.pinnedPoints().isEmpty)

        // Images instead of NBD: the script sees the exported raw image, byte-identical to `lifeboat export`.
        try site.configure(["--disk-delivery", "raw"])
        try site.declareIncident()
        let raw = try site.lifeboat(["launch", "--mode", "recovery", "web", "--wait", "--json"])
        let rawJob = try site.parse(raw.stdout)
        #expect(((rawJob["items"] as? [[String: Any]])?.first?["launchStatus"] as? String) == "LAUNCHED", "\(rawJob)")
        let exported = try site.export(point: point, name: "compare")
        let digest = try site.sha256(exported)
        let rawDetails = (rawJob["events"] as? [[String: Any]] ?? []).compactMap { $0["detail"] as? String }
        #expect(rawDetails.contains { $0.contains("image sha256 \(digest)") }, "the image matches the export: \(rawDetails)")
        #expect(try site.machine("web")?["drLifecycle"] as? String == "RECOVERY_LAUNCHED")
        let rawID = try #require(try site.instances().first?["id"] as? String)
        #expect(try site.lifeboat(["instances", "terminate", rawID]).status == 0)
        #expect(!FileTools.exists(site.data + "/instances/\(rawID)/images"), "the exported images were removed")

        // `lifeboat export --format qcow2` holds the same bytes.
        let qcow2 = site.dir.child("export.qcow2")
        let exportedQcow2 = try site.lifeboat(["export", "web", "--point", point, "--format", "qcow2", "--output", qcow2])
        #expect(exportedQcow2.status == 0, "\(exportedQcow2.stderr)")
        let compared = try Processes.run("/usr/bin/qemu-img", ["compare", "-f", "qcow2", "-F", "raw", qcow2, exported])
        #expect(compared.status == 0, "qemu-img compare: \(compared.stdout) \(compared.stderr)")

        // Choosing machines by application and all; a point by time; a job waits PENDING until a server runs.
        try site.configure(["--disk-delivery", "nbd", "--application", "shop"])
        let points = try site.parseArray(try ReplicationSite.lifeboat(["store", "points", "--json"] + site.site.storeArguments).stdout)
        let pointTime = try #require(points.first { $0["point"] as? String == point }?["time"] as? String)
        site.site.stopServer()
        let queued = try site.queueLaunch(["--mode", "test", "--application", "shop", "--point", "web=\(pointTime)"])
        let pending = try site.parse(try site.lifeboat(["jobs", queued, "--json"]).stdout)
        #expect(pending["status"] as? String == "PENDING", "no server runs: the job waits")
        #expect((pending["items"] as? [[String: Any]])?.first?["point"] as? String == point, "the time resolved to the point")
        try site.site.startServer()
        let byApplication = try site.follow(queued)
        #expect((byApplication["items"] as? [[String: Any]])?.map { $0["launchStatus"] as? String } == ["LAUNCHED"], "\(byApplication)")
        let everything = try site.lifeboat(["launch", "--mode", "test", "--all", "--wait", "--json"])
        #expect((try site.parse(everything.stdout)["items"] as? [[String: Any]])?.map { $0["machine"] as? String } == ["web"])
        let running = try site.instances().compactMap { $0["id"] as? String }
        #expect(running.count == 2)
        #expect(try site.lifeboat(["instances", "terminate"] + running).status == 0)

        // A launcher that fails: LAUNCH_FAILED with its words, nothing kept.
        let failing = site.dir.child("failing.sh")
        try FileTools.write(failing, Array("#!/bin/sh\ncat >/dev/null\necho 'no capacity left in pool' >&2\nexit 3\n".utf8), mode: 0o755)
        try site.configure(["--launcher-command", failing, "--disk-delivery", "nbd"])
        let failed = try site.lifeboat(["launch", "--mode", "test", "web", "--wait", "--json"])
        #expect(failed.status == 1)
        let failedItem = try #require((try site.parse(failed.stdout)["items"] as? [[String: Any]])?.first)
        #expect(failedItem["launchStatus"] as? String == "FAILED")
        #expect((failedItem["error"] as? String ?? "").contains("exited 3: no capacity left in pool"), "\(failedItem)")
        #expect(try site.pinnedPoints().isEmpty)
        #expect(try site.instances().isEmpty)
    }

    static let launcherScript = """
        #!/usr/bin/env python3
        import hashlib, json, os, subprocess, sys
        request = json.load(sys.stdin)
        directory = request["directory"]
        with open(os.path.join(directory, "actions.log"), "a") as log:
            log.write(json.dumps(request) + "\\n")
        if request["action"] == "launch":
            disk = request["disks"][0]
            console = os.path.join(directory, "console.log")
            if disk["nbdURI"]:
                size = subprocess.run(["nbdinfo", "--size", disk["nbdURI"]], capture_output=True, text=True, check=True).stdout.strip()
                print("launcher: disk of %s bytes over NBD" % size)
            else:
                size = os.path.getsize(disk["imagePath"])
                digest = hashlib.sha256(open(disk["imagePath"], "rb").read()).hexdigest()
                print("launcher: image sha256 %s" % digest)
            with open(console, "w") as out:
                out.write("booting\\nREADY size=%s\\n" % size)
            print(json.dumps({"address": "127.0.0.1", "ports": {}, "console": console}))
        else:
            print("launcher: terminated " + request["instance"])
        """

    // MARK: - A recovery network on a tap device

    @Test("recovery onto a tap network: QEMU attaches the tap, the checks reach the machine at its recovery address")
    func recoveryOnTapNetwork() async throws {
        // A tap device on this host standing in for the recovery network: the host is 10.0.2.2, the fixture guest
        // configures itself as 10.0.2.15/24. Host routes (/32) only, so nothing else on the host is affected.
        let tap = "lbtap\(UInt16.random(in: 1000...65000))"
        func ip(_ arguments: [String]) throws {
            let r = try Processes.run("/usr/sbin/ip", arguments)
            try #require(r.status == 0, "ip \(arguments.joined(separator: " ")): \(r.stderr)")
        }
        let existing = try Processes.run("/usr/sbin/ip", ["-o", "addr", "show"]).stdout
        try #require(!existing.contains(" 10.0.2."), "this host already uses 10.0.2.0/24; the tap test needs it free: \(existing)")
        try ip(["tuntap", "add", "dev", tap, "mode", "tap"])
        defer { _ = try? Processes.run("/usr/sbin/ip", ["link", "delete", tap]) }
        try ip(["addr", "add", "10.0.2.2/32", "dev", tap])
        try ip(["link", "set", tap, "up"])
        try ip(["route", "add", "10.0.2.15/32", "dev", tap])

        let site = try LaunchSite()
        defer { site.stop() }
        _ = try site.protect(text: "lifeboat on tap\n")
        try site.configure([
            "--memory", "256", "--recovery-network", "tap:\(tap)", "--recovery-address", "10.0.2.15",
            "--check", "http:80:/index.html:200:lifeboat on tap", "--check-timeout", Self.checkTimeout,
        ])
        try site.declareIncident()
        let result = try site.lifeboat(["launch", "--mode", "recovery", "web", "--wait", "--json"])
        let job = try site.parse(result.stdout)
        let item = try #require((job["items"] as? [[String: Any]])?.first)
        #expect(item["launchStatus"] as? String == "LAUNCHED", "\(item) \(site.console(item["instance"])) \(site.log())")
        let passed = (job["events"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "CHECK_PASSED" }
            .compactMap { $0["detail"] as? String }
        #expect(passed.contains { $0.contains("http://10.0.2.15:80/index.html") }, "the check went over the tap: \(passed)")
        let instance = try #require(try site.instances().first)
        #expect(instance["host"] as? String == "10.0.2.15")
        #expect((instance["ports"] as? [String: Any])?.isEmpty == true, "no forwards on a tap network")
        let id = try #require(instance["id"] as? String)
        #expect(try site.lifeboat(["instances", "terminate", id]).status == 0)
    }

    // MARK: - NBD reachable from other hosts: TLS

    @Test("an NBD server bound beyond loopback requires TLS: QEMU boots over nbds with the CA, a plain client is refused")
    func nbdOverTLS() async throws {
        let site = try LaunchSite(nbdBind: "0.0.0.0:0")
        defer { site.stop() }
        _ = try site.protect(text: "lifeboat over tls\n")
        try site.configure(["--memory", "256", "--check", "http:80:/index.html:200:lifeboat over tls", "--check-timeout", Self.checkTimeout])
        let result = try site.lifeboat(["launch", "--mode", "test", "web", "--wait", "--json"])
        let job = try site.parse(result.stdout)
        let item = try #require((job["items"] as? [[String: Any]])?.first)
        #expect(item["launchStatus"] as? String == "LAUNCHED", "\(item) \(site.console(item["instance"])) \(site.log())")
        let conversion = (job["events"] as? [[String: Any]] ?? []).first { $0["kind"] as? String == "CONVERSION_END" }
        let uri = (conversion?["detail"] as? String ?? "").split(separator: " ").first.map(String.init) ?? ""
        #expect(uri.hasPrefix("nbds://127.0.0.1:"), "the disk is served over TLS: \(conversion ?? [:])")
        // The same export without TLS: refused.
        let plain = try Processes.run("/usr/bin/qemu-img", ["info", "nbd" + uri.dropFirst(4)])
        #expect(plain.status != 0, "a plain NBD client must be refused: \(plain.stdout)")
        #expect(plain.stderr.lowercased().contains("tls"), "the refusal names TLS: \(plain.stderr)")
        // Over TLS, only the server's own NBD client certificate opens it: none, or an agent's certificate signed
        // by the same CA, is refused; the NBD client identity (what QEMU used) works.
        let parts = uri.dropFirst("nbds://".count).split(separator: "/", maxSplits: 1)
        let hostPort = parts[0].split(separator: ":")
        func tlsInfo(_ credentials: String) throws -> ProcessResult {
            try Processes.run("/usr/bin/qemu-img", [
                "info", "--object", "tls-creds-x509,id=tls0,dir=\(credentials),endpoint=client",
                "--image-opts",
                "driver=nbd,server.type=inet,server.host=\(hostPort[0]),server.port=\(hostPort[1]),export=\(parts[1]),tls-creds=tls0",
            ])
        }
        let caOnly = site.dir.child("tls-ca-only")
        try FileManager.default.createDirectory(atPath: caOnly, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: site.data + "/ca/ca.pem", toPath: caOnly + "/ca-cert.pem")
        #expect(try tlsInfo(caOnly).status != 0, "a TLS client without a certificate must be refused")
        let agentIdentity = site.dir.child("tls-agent")
        try FileManager.default.createDirectory(atPath: agentIdentity, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: site.data + "/ca/ca.pem", toPath: agentIdentity + "/ca-cert.pem")
        try FileManager.default.copyItem(atPath: site.state + "/agent.pem", toPath: agentIdentity + "/client-cert.pem")
        try FileManager.default.copyItem(atPath: site.state + "/agent.key", toPath: agentIdentity + "/client-key.pem")
        let asAgent = try tlsInfo(agentIdentity)
        #expect(asAgent.status != 0, "an agent's certificate must not open recovered disks: \(asAgent.stdout)")
        let asLifeboat = try tlsInfo(site.data + "/nbd-client")
        #expect(asLifeboat.status == 0, "the NBD client identity opens the export: \(asLifeboat.stderr)")
        #expect(try FileTools.mode(site.data + "/nbd-client/client-key.pem") & 0o077 == 0, "the client key is 0600")
        let id = try #require(item["instance"] as? String)
        #expect(try site.lifeboat(["instances", "terminate", id]).status == 0)
    }

    // MARK: - Recovery mode and a server restart

    @Test("recovery mode gets the recovery network; the instance survives kill -9 of the server and is terminated after it")
    func recoveryModeSurvivesServerRestart() async throws {
        let site = try LaunchSite()
        defer { site.stop() }
        let outside = try HostListener()
        defer { outside.stop() }
        _ = try site.protect(text: "lifeboat recovery\n")
        try site.configure([
            "--memory", "256", "--recovery-network", "user", "--check", "serial:LIFEBOAT-EGRESS open",
            "--check", "http:80:/index.html:200:lifeboat recovery", "--check-timeout", Self.checkTimeout,
            "--qemu-arg", "-smbios", "--qemu-arg", "type=11,value=lifeboat-egress=10.0.2.2:\(outside.port)",
        ])
        try site.declareIncident()
        let result = try site.lifeboat(["launch", "--mode", "recovery", "web", "--wait", "--json"])
        let job = try site.parse(result.stdout)
        let item = try #require((job["items"] as? [[String: Any]])?.first)
        #expect(item["launchStatus"] as? String == "LAUNCHED", "\(item) \(site.console(item["instance"])) \(site.log())")
        #expect(outside.connections > 0, "the recovery network reaches outside the host (the guest's probe connected)")
        #expect(try site.machine("web")?["drLifecycle"] as? String == "RECOVERY_LAUNCHED")
        let instance = try #require(try site.instances().first)
        let id = try #require(instance["id"] as? String)

        // kill -9 the server: the machine keeps running; a new server serves its disk again and QEMU reconnects.
        let nbdPort = try #require(Int(site.site.nbdAddress.split(separator: ":").last ?? ""))
        site.site.stopServer(signal: SIGKILL)
        #expect(site.vmRunning(id), "the recovery machine outlives the server")
        try site.site.startServer()
        #expect(site.site.nbdAddress.hasSuffix(":\(nbdPort)"), "the NBD server came back on its port")
        // QEMU 7.2 reconnects when the guest next does disk I/O; a guest page read now and then asks for some. Up
        // to 180 s on a machine busy with the rest of the suite (a guard against a hang, not a timing check:
        // alone this takes a few seconds).
        var reconnected = false
        for attempt in 0..<360 where !reconnected {
            reconnected = NetTCP.established(remotePort: nbdPort)
            if !reconnected {
                if attempt % 10 == 9 { site.poke(instance: instance, path: "/index.html") }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        #expect(reconnected, "QEMU reconnected to the restarted NBD server")
        #expect(try site.get(instance: instance, path: "/index.html") == "lifeboat recovery\n")
        #expect(try site.instances().first?["state"] as? String == "RUNNING")

        let terminated = try site.lifeboat(["instances", "terminate", id])
        #expect(terminated.status == 0, "\(terminated.stdout) \(terminated.stderr)")
        #expect(!site.vmRunning(id))
        #expect(try site.pinnedPoints().isEmpty)
    }
}

// MARK: - Support

/// A server with one protected machine `web` whose disk is a copy of the bootable fixture.
final class LaunchSite: @unchecked Sendable {
    let site: ReplicationSite
    let image: String
    var state = ""
    var dir: TemporaryDirectory { site.dir }
    var data: String { site.data }

    init(nbdBind: String = "127.0.0.1:0") throws {
        site = try ReplicationSite()
        site.nbdBind = nbdBind
        image = site.dir.child("web.img")
        try site.startServer()
    }

    func stop() {
        // Leave no machine behind, whatever the test did.
        for instance in (try? instances()) ?? [] {
            if let id = instance["id"] as? String { _ = try? lifeboat(["instances", "terminate", id]) }
        }
        site.stopServer()
    }

    func log() -> String { String(site.log().suffix(3000)) }

    /// The end of an instance's serial console and QEMU output, for failure messages.
    func console(_ instance: Any?) -> String {
        guard let id = instance as? String else { return "" }
        let console = (try? String(contentsOfFile: data + "/instances/\(id)/console.log", encoding: .utf8)) ?? "(no console)"
        let qemu = (try? String(contentsOfFile: data + "/instances/\(id)/qemu.log", encoding: .utf8)) ?? ""
        return "console of \(id):\n\(console.suffix(2000))\nqemu: \(qemu.suffix(1000))"
    }

    @discardableResult
    func lifeboat(_ arguments: [String]) throws -> ProcessResult {
        let needsData = ["launch", "jobs", "instances", "machines", "export", "incidents"].contains(arguments.first ?? "")
        return try ReplicationSite.lifeboat(arguments + (needsData ? ["--data", data] : []))
    }

    /// Recovery launches happen under an open incident: declares one (on the server host, as a decider would).
    func declareIncident() throws {
        let r = try lifeboat(["incidents", "declare", "test recovery", "--severity", "low"])
        try #require(r.status == 0, "incidents declare: \(r.stderr)")
    }

    /// Copies the fixture with `text` as its served file, enrolls `web`, replicates once; returns the point id.
    func protect(text: String) throws -> String {
        let fixture = try BootDisk.cached()
        try FileManager.default.copyItem(atPath: fixture, toPath: image)
        try BootDisk.replaceServedText(image: image, text: text)
        state = try site.enroll("web")
        return try replicate()
    }

    /// One agent cycle; the new point's id.
    func replicate() throws -> String {
        let r = try site.agentOnce(state: state, volumes: ["root=\(image)"])
        try #require(r.status == 0, "agent --once: \(r.stderr)")
        let points = try parseArray(try ReplicationSite.lifeboat(["store", "points", "--json"] + site.storeArguments).stdout)
        return try #require(points.filter { $0["machine"] as? String == "web" }.last?["point"] as? String)
    }

    func machine(_ name: String) throws -> [String: Any]? { try site.machine(name) }

    func configure(_ arguments: [String]) throws {
        let r = try lifeboat(["machines", "configure", "web"] + arguments)
        try #require(r.status == 0, "configure: \(r.stderr)")
    }

    func queueLaunch(_ arguments: [String]) throws -> String {
        let r = try lifeboat(["launch", "--json"] + arguments)
        try #require(r.status == 0, "launch: \(r.stderr)")
        return try #require(try parse(r.stdout)["id"] as? String)
    }

    func follow(_ job: String) throws -> [String: Any] {
        let r = try lifeboat(["jobs", job, "--follow", "--json"])
        try #require(r.status == 0, "jobs --follow: \(r.stderr)")
        return try parse(r.stdout)
    }

    func instances(all: Bool = false) throws -> [[String: Any]] {
        let r = try lifeboat(["instances", "list", "--json"] + (all ? ["--all"] : []))
        try #require(r.status == 0, "instances: \(r.stderr)")
        return try parseArray(r.stdout)
    }

    func export(point: String, name: String) throws -> String {
        let path = dir.child("export-\(name).raw")
        let r = try lifeboat(["export", "web", "--point", point, "--output", path])
        try #require(r.status == 0, "export: \(r.stderr)")
        return path
    }

    func pinnedPoints() throws -> Set<String> {
        let r = try ReplicationSite.lifeboat(["store", "points", "--json"] + site.storeArguments)
        try #require(r.status == 0, "store points: \(r.stderr)")
        return Set(try parseArray(r.stdout).filter { $0["pinned"] as? Bool == true }.compactMap { $0["point"] as? String })
    }

    /// GET through the instance's forwarded port (python3's urllib: no curl needed).
    func get(instance: [String: Any], path: String) throws -> String {
        let host = try #require(instance["host"] as? String)
        let port = try #require((instance["ports"] as? [String: Any])?["80"] as? Int)
        let r = try Processes.run(
            "/usr/bin/python3",
            ["-c", "import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=20).read().decode())", "http://\(host):\(port)\(path)"]
        )
        try #require(r.status == 0, "GET \(path): \(r.stderr)")
        return r.stdout
    }

    /// A GET whose outcome does not matter (it only makes the guest work); 5 s at most.
    func poke(instance: [String: Any], path: String) {
        guard let host = instance["host"] as? String, let port = (instance["ports"] as? [String: Any])?["80"] as? Int else { return }
        _ = try? Processes.run(
            "/usr/bin/python3",
            ["-c", "import sys,urllib.request;urllib.request.urlopen(sys.argv[1],timeout=5).read()", "http://\(host):\(port)\(path)"]
        )
    }

    func vmRunning(_ instance: String) -> Bool {
        (try? Processes.run("/usr/bin/pgrep", ["-f", "process=lifeboat-\(instance)"]).status) == 0
    }

    func sha256(_ path: String) throws -> String {
        let r = try Processes.run("/usr/bin/sha256sum", [path])
        return String(r.stdout.prefix(64))
    }

    func parse(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    func parseArray(_ text: String) throws -> [[String: Any]] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]], "not a JSON array: \(text)")
    }
}

/// A loopback HTTP server (python3) that counts connections: the target of the guest's egress probe.
final class HostListener {
    let process: Process
    let port: Int
    let logPath: String
    /// Kept for the listener's life: its log lives there.
    let dir: TemporaryDirectory

    init() throws {
        dir = try TemporaryDirectory(prefix: "lifeboat-listener")
        logPath = dir.child("requests.log")
        let portFile = dir.child("port")
        let script = """
            import http.server, socketserver, sys
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    open(sys.argv[1], "a").write("GET\\n")
                    self.send_response(200); self.end_headers(); self.wfile.write(b"reached\\n")
            s = socketserver.TCPServer(("127.0.0.1", 0), H)
            open(sys.argv[2], "w").write(str(s.server_address[1]))
            s.serve_forever()
            """
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", script, logPath, portFile]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var found: Int?
        for _ in 0..<100 where found == nil {
            found = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0) }
            if found == nil { Thread.sleep(forTimeInterval: 0.05) }
        }
        port = try #require(found, "the host listener did not start")
    }

    var connections: Int {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    func stop() {
        // SIGKILL: the test process's ignored signals (SIGTERM among them) are inherited by python.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// Established TCP connections from /proc/net/tcp.
enum NetTCP {
    /// True when a connection to 127.0.0.1:`remotePort` is ESTABLISHED (a client of that port on this host).
    static func established(remotePort: Int) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return false }
        let hexPort = String(format: "%04X", remotePort)
        return text.split(separator: "\n").dropFirst().contains { line in
            let fields = line.split(separator: " ")
            guard fields.count > 3 else { return false }
            return fields[2].hasSuffix(":" + hexPort) && fields[3] == "01"
        }
    }
}

func expectSame(_ a: [UInt8], _ b: [UInt8], _ what: String) {
    #expect(a.count == b.count, "\(what): sizes \(a.count) vs \(b.count)")
    #expect(a == b, "\(what): first difference at \(ByteCompare.firstDifference(a, b).map(String.init) ?? "-")")
}

extension Array where Element: Hashable {
    /// The elements in order, each once.
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
