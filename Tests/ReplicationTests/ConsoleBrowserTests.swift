import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// The web console in a real browser: Debian's chromium, headless, driven by selenium through chromium-driver
/// (`Tests/browser/console_e2e.py`), against the real server. Screenshots go to `.build/test-artifacts/console/`.
@Suite("Console in a real browser", .serialized)
struct ConsoleBrowserTests {
    static var repository: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    @Test("operator drill from an earlier point (purple, Tested recently, terminate); recovery needs an incident; analyst reads only")
    func consoleFlows() async throws {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            try #require(FileManager.default.isExecutableFile(atPath: tool), "\(tool) is missing: run scripts/setup (it installs chromium and chromium-driver)")
        }
        let selenium = try Processes.run("/usr/bin/env", ["python3", "-c", "import selenium"])
        try #require(selenium.status == 0, "selenium is missing: run scripts/setup (it installs selenium from PyPI)")

        let site = try ReplicationSite()
        defer { site.stopServer(signal: SIGKILL) }
        try site.startServer()
        let people = try CLIPeople(site: site)
        try people.bootstrapAdmin()
        for (name, roles) in [("olga", "operator"), ("dave", "decider"), ("ann", "analyst")] {
            let made = try people.run("admin", ["users", "create", name, "--roles", roles, "--password-stdin"], input: CLIPeople.password(name))
            try #require(made.status == 0, "users create \(name): \(made.stderr)")
        }

        // A protected machine with two recovery points and a command launcher that "boots" at once.
        let image = site.dir.child("web.img")
        try FileTools.write(image, [UInt8](repeating: 1, count: 4 << 20))
        let state = try site.enroll("web")
        let first = try site.agentOnce(state: state, volumes: ["root=\(image)"])
        try #require(first.status == 0, "agent: \(first.stderr)")
        let earlier = try #require(try site.points(machine: "web").first?["point"] as? String)
        try FileTools.write(image, [UInt8](repeating: 2, count: 4 << 20))
        let second = try site.agentOnce(state: state, volumes: ["root=\(image)"])
        try #require(second.status == 0, "agent: \(second.stderr)")
        let script = site.dir.child("launcher.py")
        try FileTools.write(script, Array(LaunchTests.launcherScript.utf8), mode: 0o755)
        let configured = try people.run(
            "admin",
            ["machines", "configure", "web", "--launcher", "command", "--launcher-command", script, "--check", "serial:READY", "--check-timeout", "60"]
        )
        try #require(configured.status == 0, "configure: \(configured.stderr)")

        let artifacts = Self.repository + "/.build/test-artifacts/console"
        try? FileManager.default.removeItem(atPath: artifacts)
        let run = try Processes.run(
            "/usr/bin/env",
            [
                "python3", Self.repository + "/Tests/browser/console_e2e.py", site.apiURL, site.data + "/tls/server.pem", artifacts, earlier,
                CLIPeople.passwordSuffix,
            ]
        )
        #expect(run.status == 0, "console_e2e.py:\n\(run.stdout)\n\(run.stderr)\nserver log:\n\(site.log().suffix(3000))")
        #expect(run.stdout.contains("console-e2e: passed"))
        for name in ["machines", "choose-recovery-point", "machines-phone"] {
            #expect(FileManager.default.fileExists(atPath: "\(artifacts)/\(name).png"), "screenshot \(name)")
        }
    }
}
