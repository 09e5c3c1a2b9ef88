import ControlPlaneClient
import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// The incident-response plan end to end through the command line against a running server over HTTPS: each
/// person logs in with their own role; a drill by the operator; recovery refused without an incident, allowed
/// once a decider declared one; the analyst reports and cannot launch; objectives measured; the audit log holds
/// every step and verifies; the access check proves every role has a holder who can act.
@Suite("Control plane through the CLI", .serialized)
struct ControlPlaneCLITests {
    @Test("drill, refused recovery, incident, recovery under it, notes, terminate, close; audit and access check")
    func incidentResponse() async throws {
        let site = try ReplicationSite()
        defer { site.stopServer(signal: SIGKILL) }
        try site.startServer()
        let people = try CLIPeople(site: site)

        // The first admin on the server host, then everyone else through the API.
        try people.bootstrapAdmin()
        for (name, roles) in [("olga", "operator"), ("dave", "decider"), ("ann", "analyst")] {
            let made = try people.run("admin", ["users", "create", name, "--roles", roles, "--password-stdin"], input: CLIPeople.password(name))
            try #require(made.status == 0, "users create \(name): \(made.stderr)")
            try people.login(name)
        }
        let created = try people.run("admin", ["applications", "create", "shop", "--rpo", "10m", "--rto", "15m"])
        try #require(created.status == 0, "applications create: \(created.stderr)")

        // A protected machine with a recovery point, launched by a command launcher (no QEMU needed here).
        let image = site.dir.child("web.img")
        try FileTools.write(image, (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        let state = try site.enroll("web")
        let replicated = try site.agentOnce(state: state, volumes: ["root=\(image)"])
        try #require(replicated.status == 0, "agent: \(replicated.stderr)")
        let script = site.dir.child("launcher.py")
        try FileTools.write(script, Array(LaunchTests.launcherScript.utf8), mode: 0o755)
        let configured = try people.run(
            "admin",
            [
                "machines", "configure", "web", "--application", "shop", "--launcher", "command", "--launcher-command", script,
                "--check", "serial:READY", "--check-timeout", "60",
            ]
        )
        try #require(configured.status == 0, "configure: \(configured.stderr)")
        let points = try people.json("ann", ["points", "web", "--json"]) as? [[String: Any]]
        let point = try #require(points?.first?["id"] as? String, "points: \(String(describing: points))")

        // The analyst sees everything and can launch nothing.
        let analystLaunch = try people.run("ann", ["launch", "--mode", "test", "web"])
        #expect(analystLaunch.status != 0)
        #expect(analystLaunch.stderr.contains("may not launch-drill"), "\(analystLaunch.stderr)")

        // A drill by the operator from the point listed.
        let drill = try people.json("olga", ["launch", "--mode", "test", "--point", point, "web", "--wait", "--json"]) as? [String: Any]
        let drillItem = try #require((drill?["items"] as? [[String: Any]])?.first, "\(String(describing: drill)) \(site.log())")
        #expect(drillItem["launchStatus"] as? String == "LAUNCHED", "\(drillItem)")
        #expect(drill?["requestedBy"] as? String == "olga")
        let drillInstance = try #require(drillItem["instance"] as? String)
        let machine = try #require((try people.json("ann", ["machines", "--json"]) as? [[String: Any]])?.first)
        #expect(machine["drLifecycle"] as? String == "TESTED_RECENTLY")
        let running = machine["runningInstances"] as? [[String: Any]] ?? []
        #expect(running.first?["mode"] as? String == "TEST", "the machine shows its drill instance: \(machine)")

        // Objectives: the drill's RTO and the current lag measured against the application's goals.
        let application = try #require((try people.json("ann", ["applications", "--json"]) as? [[String: Any]])?.first)
        #expect(application["machines"] as? [String] == ["web"])
        #expect((application["measuredRTOSeconds"] as? Double ?? 0) > 0, "\(application)")
        #expect(application["rtoMet"] as? Bool == true, "\(application)")
        #expect(application["lastDrillAt"] as? String != nil)

        // Recovery without an incident is refused, with what to do.
        let refused = try people.run("olga", ["launch", "--mode", "recovery", "web"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("needs an open incident"), "\(refused.stderr)")
        let operatorDeclares = try people.run("olga", ["incidents", "declare", "not mine to declare"])
        #expect(operatorDeclares.status != 0 && operatorDeclares.stderr.contains("may not manage-incidents"), "\(operatorDeclares.stderr)")

        // The decider declares one; the operator recovers under it.
        let declared = try people.run("dave", ["incidents", "declare", "ransomware on web", "--severity", "critical", "--application", "shop"])
        try #require(declared.status == 0, "declare: \(declared.stderr)")
        let incidents = try #require(try people.json("ann", ["incidents", "list", "--json"]) as? [[String: Any]])
        let incident = try #require(incidents.first?["id"] as? String)
        let recovery = try people.json("olga", ["launch", "--mode", "recovery", "web", "--wait", "--json"]) as? [String: Any]
        let recoveryItem = try #require((recovery?["items"] as? [[String: Any]])?.first, "\(String(describing: recovery))")
        #expect(recoveryItem["launchStatus"] as? String == "LAUNCHED", "\(recoveryItem)")
        #expect(recovery?["incident"] as? String == incident)
        let recoveryJob = try #require(recovery?["id"] as? String)

        // The analyst reports to the decision-makers; the incident records the launch.
        let noted = try people.run("ann", ["incidents", "note", incident, "files encrypted since 14:02; last clean point known", "--report"])
        #expect(noted.status == 0, "\(noted.stderr)")
        let shown = try #require(try people.json("ann", ["incidents", "show", incident, "--json"]) as? [String: Any])
        #expect(shown["launches"] as? [String] == [recoveryJob])
        #expect((shown["notes"] as? [[String: Any]])?.first?["kind"] as? String == "REPORT")

        // Terminate both instances; close the incident.
        let instances = try #require(try people.json("ann", ["instances", "--json"]) as? [[String: Any]])
        #expect(Set(instances.compactMap { $0["mode"] as? String }) == ["TEST", "RECOVERY"], "\(instances)")
        let ids = instances.compactMap { $0["id"] as? String }
        #expect(ids.contains(drillInstance))
        let analystTerminates = try people.run("ann", ["instances", "terminate"] + ids)
        #expect(analystTerminates.status != 0, "the analyst may not terminate")
        let terminated = try people.run("olga", ["instances", "terminate"] + ids)
        #expect(terminated.status == 0, "terminate: \(terminated.stdout) \(terminated.stderr)")
        let closed = try people.run("dave", ["incidents", "close", incident, "--summary", "restored web from the last clean point"])
        #expect(closed.status == 0, "close: \(closed.stderr)")
        let lateRecovery = try people.run("olga", ["launch", "--mode", "recovery", "web"])
        #expect(lateRecovery.status != 0, "after the incident is closed, recovery needs a new one")

        // The audit log: who did what, verified intact.
        let audit = try #require(try people.json("ann", ["audit", "list", "--limit", "200", "--json"]) as? [[String: Any]])
        let launches = audit.filter { ($0["action"] as? String) == "POST /api/v1/launches" }
        #expect(launches.contains { $0["actor"] as? String == "olga" && ($0["result"] as? String ?? "").hasPrefix("202") })
        #expect(launches.contains { $0["actor"] as? String == "ann" && ($0["result"] as? String ?? "").hasPrefix("403") }, "refusals are audited")
        #expect(audit.contains { $0["actor"] as? String == "dave" && ($0["action"] as? String ?? "").contains("/close") })
        let verify = try people.run("ann", ["audit", "verify"])
        #expect(verify.status == 0 && verify.stdout.contains("intact"), "\(verify.stdout) \(verify.stderr)")

        // Every role has a holder who really can act; without a decider, the check fails.
        let check = try people.run("ann", ["access", "check"])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
        let disabled = try people.run("admin", ["users", "set", "dave", "--disable"])
        #expect(disabled.status == 0, "\(disabled.stderr)")
        let failing = try people.run("admin", ["access", "check"])
        #expect(failing.status != 0)
        #expect(failing.stdout.contains("nobody holds this role"), "\(failing.stdout)")
        let daveAfter = try people.run("dave", ["incidents", "list"])
        #expect(daveAfter.status != 0, "disabling a user revokes their tokens")

        // Metrics in Prometheus text format.
        let token = try people.token("admin")
        let client = try APIClient(baseURL: site.apiURL, token: token, caPEM: try people.caPEM())
        let metrics = try await client.text("/metrics")
        await client.shutdown()
        #expect(metrics.contains("lifeboat_replication_lag_seconds{machine=\"web\"}"), "\(metrics.prefix(2000))")
        #expect(metrics.contains("lifeboat_launch_rto_seconds{machine=\"web\"}"))
        #expect(metrics.contains("lifeboat_job_duration_seconds_count"))
        #expect(metrics.contains("lifeboat_store_bytes"))
        #expect(metrics.contains("http_server_request_duration"), "API latency is measured")

        // On a terminal, `launch --wait` shows a progress bar on stderr while it waits (util-linux `script` gives it
        // a pseudo-terminal).
        let olgaConfig = people.configDirectory("olga")
        let command = "LIFEBOAT_CONFIG_DIR=\(olgaConfig) \(ReplicationSite.binary) launch --mode test web --wait"
        let tty = try Processes.run("/usr/bin/script", ["-qec", command, "/dev/null"])
        #expect(tty.status == 0, "launch on a terminal: \(tty.stdout) \(tty.stderr)")
        #expect(tty.stdout.contains("░") || tty.stdout.contains("█"), "a progress bar while waiting: \(tty.stdout)")
        #expect(tty.stdout.contains("LAUNCHED"), "\(tty.stdout)")

        // Logging out revokes the stored token.
        let out = try people.run("olga", ["logout"])
        #expect(out.status == 0)
        let afterLogout = try people.run("olga", ["machines"])
        #expect(afterLogout.status != 0)
    }
}

/// Each person's own CLI configuration directory (their login), against one site.
struct CLIPeople {
    let site: ReplicationSite

    init(site: ReplicationSite) throws {
        self.site = site
    }

    static let passwordSuffix = "-correct-horse-battery"
    static func password(_ name: String) -> String { name + passwordSuffix }

    func configDirectory(_ name: String) -> String { site.dir.child("config-\(name)") }

    func caPEM() throws -> String { try String(contentsOfFile: site.data + "/ca/ca.pem", encoding: .utf8) }

    func bootstrapAdmin() throws {
        let made = try StdinProcess.run(
            ReplicationSite.binary, ["users", "create", "admin", "--roles", "admin", "--password-stdin", "--data", site.data],
            input: Self.password("admin")
        )
        try #require(made.status == 0, "bootstrap: \(made.stderr)")
        try login("admin")
    }

    func login(_ name: String) throws {
        let r = try run(
            name, ["login", "--server", site.apiURL, "--user", name, "--password-stdin", "--ca", site.data + "/ca/ca.pem"],
            input: Self.password(name)
        )
        try #require(r.status == 0, "login \(name): \(r.stderr)")
        let mode = try FileManager.default.attributesOfItem(atPath: configDirectory(name) + "/credentials.json")[.posixPermissions] as? Int
        #expect(mode == 0o600, "credentials are private")
    }

    /// The API token `lifeboat login` stored for `name`.
    func token(_ name: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: configDirectory(name) + "/credentials.json"))
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        return try #require(object?["token"] as? String)
    }

    /// Runs the CLI as `name` (their login), without a data directory: through the API.
    func run(_ name: String, _ arguments: [String], input: String? = nil) throws -> ProcessResult {
        try StdinProcess.run(ReplicationSite.binary, arguments, input: input, environment: ["LIFEBOAT_CONFIG_DIR": configDirectory(name)])
    }

    func json(_ name: String, _ arguments: [String]) throws -> Any {
        let r = try run(name, arguments)
        try #require(r.status == 0, "\(arguments.joined(separator: " ")): \(r.stderr)")
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
    }
}

/// A child process with text on its standard input.
enum StdinProcess {
    static func run(_ executable: String, _ arguments: [String], input: String?, environment: [String: String] = [:]) throws
        -> ProcessResult
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["LIFEBOAT_DATA"] = nil
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data((input + "\n").utf8)) }
        try stdin.fileHandleForWriting.close()
        // Read both pipes to the end before waiting, so a chatty child never blocks on a full pipe.
        let group = DispatchGroup()
        nonisolated(unsafe) var errData = Data()
        group.enter()
        DispatchQueue.global().async {
            errData = stderr.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = stdout.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return ProcessResult(
            status: process.terminationStatus,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self)
        )
    }
}
