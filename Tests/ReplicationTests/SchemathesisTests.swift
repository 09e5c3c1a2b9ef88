import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// schemathesis against the real server's REST API and the OpenAPI document that server serves
/// (`scripts/api-fuzz`, every schemathesis check but object-level authorization): no 5xx, no answer that breaks
/// the document, schema-invalid requests refused and schema-valid ones accepted, 405 with `Allow` for another
/// method on a known path; and probes: malformed JSON, oversized bodies, unknown and null fields, numbers that do
/// not fit, bad query flags and malformed names refused with a 4xx that says what is wrong, and requests audited.
@Suite(.serialized)
struct SchemathesisTests {
    /// The repository's root: this file is Tests/ReplicationTests/SchemathesisTests.swift.
    static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test("schemathesis finds no server error and no answer that breaks the OpenAPI document")
    func fuzzTheAPI() throws {
        let python = try #require(Self.which("python3"), "python3 is not installed: run scripts/setup")
        let installed = try Self.run(python, ["-c", "import schemathesis"])
        try #require(
            installed.status == 0,
            "schemathesis is not installed for \(python): run scripts/setup (it installs the version api-fuzz expects)"
        )

        let site = try ReplicationSite()
        let password = "api-fuzz-" + UUID().uuidString
        let created = try Self.run(
            ReplicationSite.binary,
            ["users", "create", "admin", "--roles", "admin", "--password-stdin", "--data", site.data],
            input: password + "\n"
        )
        try #require(created.status == 0, "users create failed: \(created.stderr)")
        try site.startServer()
        defer { site.stopServer() }
        // A machine named like the document's example (`db-1`), so that the machine routes meet one that exists.
        try site.enroll("db-1")

        // The admin's API token, through the real login route (`lifeboat login` keeps it in its config directory).
        let ca = site.data + "/ca/ca.pem"
        let config = site.dir.child("config")
        let login = try Self.run(
            ReplicationSite.binary,
            ["login", "--server", site.apiURL, "--user", "admin", "--password-stdin", "--ca", ca, "--days", "1"],
            input: password + "\n",
            environment: ["LIFEBOAT_CONFIG_DIR": config]
        )
        try #require(login.status == 0, "login failed: \(login.stderr)")
        let saved = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: config + "/credentials.json"))
        )
        let token = try #require(
            (saved as? [String: Any])?["token"] as? String,
            "no token in \(config)/credentials.json"
        )

        let reports = site.dir.child("api-fuzz")
        let output = site.dir.child("api-fuzz.out")
        let started = Date()
        let fuzz = try Self.run(
            python,
            [Self.repository + "/scripts/api-fuzz", site.apiURL, ca, token],
            environment: ["API_FUZZ_REPORT_DIR": reports],
            output: output
        )
        let report = (try? String(contentsOfFile: reports + "/report.txt", encoding: .utf8)) ?? ""
        let printed = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(
            fuzz.status == 0,
            """
            scripts/api-fuzz exited \(fuzz.status) after \(Int(Date().timeIntervalSince(started))) s \
            (report: \(reports)/report.txt, removed with the test's directory); its summary:
            \(Self.summary(report.isEmpty ? printed : report))
            """
        )
        #expect(
            site.server?.isRunning == true,
            "the server stopped during the fuzzing: \(Self.tail(site.log(), lines: 40))"
        )
        // Every state-changing request is audited: the server logs the ones it could not write.
        let unaudited = site.log().split(separator: "\n").filter { $0.contains("could not write the audit log") }
        #expect(
            unaudited.isEmpty,
            "\(unaudited.count) requests were not audited, e.g. \(unaudited.prefix(3).joined(separator: "\n"))"
        )
    }

    // MARK: helpers

    static func which(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(program)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// What api-fuzz prints after its `api-fuzz: summary` line (failed probes, findings, verdicts), else its end.
    static func summary(_ report: String) -> String {
        guard let marker = report.range(of: "api-fuzz: summary\n") else { return tail(report, lines: 80) }
        return String(report[marker.upperBound...])
    }

    static func tail(_ text: String, lines: Int) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    /// Runs a program with `input` on its standard input. Its output goes to the file `output` when given
    /// (a long run writes more than a pipe holds), else it is collected and returned.
    static func run(
        _ executable: String,
        _ arguments: [String],
        input: String = "",
        environment: [String: String] = [:],
        output: String? = nil
    ) throws -> ProcessResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let stdin = Pipe()
        p.standardInput = stdin
        let outFile = output ?? NSTemporaryDirectory() + "lifeboat-run-\(UUID().uuidString).out"
        let errFile = outFile + ".err"
        _ = FileManager.default.createFile(atPath: outFile, contents: nil)
        _ = FileManager.default.createFile(atPath: errFile, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outFile))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errFile))
        defer {
            try? out.close()
            try? err.close()
            if output == nil { try? FileManager.default.removeItem(atPath: outFile) }
            try? FileManager.default.removeItem(atPath: errFile)
        }
        p.standardOutput = out
        p.standardError = output == nil ? err : out
        try p.run()
        if !input.isEmpty { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        p.waitUntilExit()
        let stdout = (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: errFile, encoding: .utf8)) ?? ""
        return ProcessResult(status: p.terminationStatus, stdout: stdout, stderr: stderr)
    }
}
