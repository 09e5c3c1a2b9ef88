import Foundation
import LifeboatCore
import Testing

/// Runs `body`, expects a `LifeboatError` with `code`, and returns it.
@discardableResult
private func expectLifeboatError(
    _ code: String,
    sourceLocation: Testing.SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> LifeboatError? {
    do {
        try body()
        Issue.record("expected an error with code \(code), but nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as LifeboatError {
        #expect(error.code.rawValue == code, "expected \(code), got [\(error.code)] \(error.message)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected a LifeboatError \(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

private func json(_ text: String) -> Data { Data(text.utf8) }

@Suite("Launch settings: acceptance checks")
struct AcceptanceCheckParsingTests {
    static let valid: [(String, AcceptanceCheck)] = [
        ("serial:login:", .serial(pattern: "login:")),
        ("serial:^READY$", .serial(pattern: "^READY$")),
        ("tcp:22", .tcp(port: 22)),
        ("tcp:1", .tcp(port: 1)),
        ("tcp:65535", .tcp(port: 65535)),
        ("http:80:/", .http(port: 80, path: "/", status: 200, bodyPattern: nil)),
        ("http:8080:/health:204", .http(port: 8080, path: "/health", status: 204, bodyPattern: nil)),
        ("http:80:/index.html:200:Welcome to (nginx|lifeboat)", .http(port: 80, path: "/index.html", status: 200, bodyPattern: "Welcome to (nginx|lifeboat)")),
        // The pattern is the rest of the text: it may hold colons.
        ("http:443:/api/v1:301:a:b:c", .http(port: 443, path: "/api/v1", status: 301, bodyPattern: "a:b:c")),
        ("command:curl -sf http://$LIFEBOAT_HOST:$LIFEBOAT_PORT_80/", .command("curl -sf http://$LIFEBOAT_HOST:$LIFEBOAT_PORT_80/")),
        ("command:true", .command("true")),
    ]

    @Test("every documented form parses into its case")
    func parsesValidForms() throws {
        for (text, expected) in Self.valid {
            #expect(try AcceptanceCheck(parsing: text) == expected, "\(text)")
        }
    }

    @Test("description is the canonical text form and parses back to the same check")
    func descriptionRoundTrip() throws {
        for (text, check) in Self.valid {
            let again = try AcceptanceCheck(parsing: check.description)
            #expect(again == check, "\(text) → \(check.description)")
        }
        #expect(AcceptanceCheck.tcp(port: 22).description == "tcp:22")
        #expect(AcceptanceCheck.serial(pattern: "login:").description == "serial:login:")
        // The default status is written out.
        #expect(try AcceptanceCheck(parsing: "http:80:/").description == "http:80:/:200")
        #expect(AcceptanceCheck.http(port: 80, path: "/x", status: 404, bodyPattern: "gone").description == "http:80:/x:404:gone")
        #expect(AcceptanceCheck.command("exit 0").description == "command:exit 0")
    }

    @Test(
        "malformed checks are launch.bad-check",
        arguments: [
            "", "tcp", "22", "tcp:", "tcp:0", "tcp:65536", "tcp:abc", "tcp:-1", "tcp:2 2",
            "serial:", "serial:(", "serial:[a-",
            "http:80", "http:80:", "http:80:health", "http::/", "http:0:/", "http:70000:/", "http:x:/",
            "http:80:/:", "http:80:/:99", "http:80:/:600", "http:80:/:ok", "http:80:/:200:", "http:80:/:200:(",
            "command:", "command:   ", "command:\t\n",
            "ssh:22", "TCP:22", "Serial:x", " tcp:22",
        ]
    )
    func rejectsMalformed(text: String) {
        let error = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: text) }
        #expect(error?.message.contains("'\(text)'") == true, "the message quotes the text: \(error?.message ?? "")")
    }

    @Test("messages say what is wrong and list the accepted forms")
    func messages() {
        let forms = "use serial:REGEX, tcp:PORT, http:PORT:PATH[:STATUS[:REGEX]] or command:SHELL"
        let noKind = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: "port 22") }
        #expect(noKind?.message == "acceptance check 'port 22' has no kind: \(forms)")
        let unknown = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: "ping:host") }
        #expect(unknown?.message == "acceptance check 'ping:host': unknown kind 'ping': \(forms)")
        let port = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: "tcp:99999") }
        #expect(port?.message == "acceptance check 'tcp:99999': '99999' is not a port (1-65535)")
        let status = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: "http:80:/:700") }
        #expect(status?.message == "acceptance check 'http:80:/:700': '700' is not an HTTP status (100-599)")
        let path = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: "http:80:index") }
        #expect(path?.message.contains("a path starting with '/'") == true)
        let regex = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: "serial:(unclosed") }
        #expect(regex?.message.contains("'(unclosed' is not a valid regular expression") == true)
        let empty = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: "serial:") }
        #expect(empty?.message == "acceptance check 'serial:' needs a pattern: \(forms)")
        let command = expectLifeboatError("launch.bad-check") { _ = try AcceptanceCheck(parsing: "command:  ") }
        #expect(command?.message == "acceptance check 'command:  ' needs a command: \(forms)")
    }

    @Test("guestPort: the port of tcp and http checks, none for serial and command")
    func guestPort() {
        #expect(AcceptanceCheck.tcp(port: 22).guestPort == 22)
        #expect(AcceptanceCheck.http(port: 8080, path: "/", status: 200, bodyPattern: nil).guestPort == 8080)
        #expect(AcceptanceCheck.serial(pattern: "x").guestPort == nil)
        #expect(AcceptanceCheck.command("true").guestPort == nil)
    }

    @Test("Codable as the text form: encodes to a string, decodes from one")
    func codableAsString() throws {
        let checks: [AcceptanceCheck] = [
            .tcp(port: 22), .http(port: 80, path: "/", status: 200, bodyPattern: "ok"), .serial(pattern: "READY"),
            .command("test -n \"$LIFEBOAT_HOST\""),
        ]
        let data = try JSONEncoder().encode(checks)
        let strings = try JSONDecoder().decode([String].self, from: data)
        #expect(strings == ["tcp:22", "http:80:/:200:ok", "serial:READY", "command:test -n \"$LIFEBOAT_HOST\""])
        #expect(try JSONDecoder().decode([AcceptanceCheck].self, from: data) == checks)
        #expect(try JSONDecoder().decode(AcceptanceCheck.self, from: json("\"http:8080:/health\"")) == .http(port: 8080, path: "/health", status: 200, bodyPattern: nil))
    }

    @Test("decoding a malformed string fails with launch.bad-check; a non-string fails to decode")
    func decodingErrors() {
        expectLifeboatError("launch.bad-check") { _ = try JSONDecoder().decode(AcceptanceCheck.self, from: json("\"tcp:0\"")) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(AcceptanceCheck.self, from: json("22")) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(AcceptanceCheck.self, from: json("{\"tcp\": 22}")) }
    }
}

@Suite("Launch settings: recovery network")
struct RecoveryNetworkTests {
    @Test("user, none, bridge:NAME and tap:NAME parse and print back")
    func parses() throws {
        let cases: [(String, RecoveryNetwork)] = [
            ("user", .user), ("none", .none), ("bridge:br0", .bridge("br0")), ("tap:tap-1", .tap("tap-1")),
            ("bridge:vmbr0.100", .bridge("vmbr0.100")), ("tap:a_b", .tap("a_b")),
            ("bridge:abcdefghijklmno", .bridge("abcdefghijklmno")),  // 15 characters: the longest interface name
            ("tap:X", .tap("X")),
        ]
        for (text, expected) in cases {
            let parsed = try RecoveryNetwork(parsing: text)
            #expect(parsed == expected, "\(text)")
            #expect(parsed.description == text)
        }
    }

    @Test(
        "anything else is launch.bad-network",
        arguments: [
            "", "User", "NONE", "bridge", "bridge:", "tap:", ":br0", "vlan:br0", "bridge:abcdefghijklmnop",
            "bridge:br 0", "bridge:br/0", "tap:a:b", "bridge:é", "tap:tap0\n", "bridge:br0;reboot",
        ]
    )
    func rejects(text: String) {
        let error = expectLifeboatError("launch.bad-network") { _ = try RecoveryNetwork(parsing: text) }
        #expect(error?.message.contains("use user, bridge:NAME, tap:NAME or none") == true)
    }

    @Test("Codable as the text form")
    func codable() throws {
        let networks: [RecoveryNetwork] = [.user, .none, .bridge("br0"), .tap("tap7")]
        let data = try JSONEncoder().encode(networks)
        #expect(try JSONDecoder().decode([String].self, from: data) == ["user", "none", "bridge:br0", "tap:tap7"])
        #expect(try JSONDecoder().decode([RecoveryNetwork].self, from: data) == networks)
        expectLifeboatError("launch.bad-network") { _ = try JSONDecoder().decode(RecoveryNetwork.self, from: json("\"bridge:\"")) }
    }
}

@Suite("Launch settings: stored form and validation")
struct LaunchSettingsTests {
    @Test("the defaults: QEMU, NBD, 1 vCPU, 512 MiB, user network, no checks, 300 s")
    func defaults() throws {
        let s = LaunchSettings()
        #expect(s.launcher == .qemu)
        #expect(s.command == nil)
        #expect(s.diskDelivery == .nbd)
        #expect(s.vcpus == 1)
        #expect(s.memoryMiB == 512)
        #expect(s.recoveryNetwork == .user)
        #expect(s.recoveryAddress == nil)
        #expect(s.checks.isEmpty)
        #expect(s.checkTimeoutSeconds == 300)
        #expect(s.forwardPorts.isEmpty)
        #expect(s.qemuArguments.isEmpty)
        #expect(s.guestPorts.isEmpty)
        try s.validate()
    }

    @Test("an empty object decodes to the defaults; missing keys keep their defaults; unknown keys are ignored")
    func missingKeys() throws {
        #expect(try JSONDecoder().decode(LaunchSettings.self, from: json("{}")) == LaunchSettings())
        let partial = try JSONDecoder().decode(
            LaunchSettings.self,
            from: json(#"{"vcpus": 4, "checks": ["tcp:22"], "recoveryNetwork": "bridge:br0", "futureField": true}"#)
        )
        var expected = LaunchSettings()
        expected.vcpus = 4
        expected.checks = [.tcp(port: 22)]
        expected.recoveryNetwork = .bridge("br0")
        #expect(partial == expected)
        #expect(partial.memoryMiB == 512)
        #expect(partial.checkTimeoutSeconds == 300)
        // Explicit nulls count as missing.
        let nulls = try JSONDecoder().decode(LaunchSettings.self, from: json(#"{"vcpus": null, "command": null, "checks": null}"#))
        #expect(nulls == LaunchSettings())
    }

    @Test("every field survives an encode/decode round trip; enums and checks are stored as text")
    func roundTrip() throws {
        var s = LaunchSettings()
        s.launcher = .command
        s.command = "/usr/local/bin/launch-vm"
        s.diskDelivery = .qcow2
        s.vcpus = 8
        s.memoryMiB = 16384
        s.recoveryNetwork = .tap("tap3")
        s.recoveryAddress = "10.1.2.3"
        s.checks = [.serial(pattern: "login:"), .http(port: 443, path: "/status", status: 204, bodyPattern: nil)]
        s.checkTimeoutSeconds = 900
        s.forwardPorts = [3389, 22]
        s.qemuArguments = ["-device", "virtio-rng-pci"]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(s)
        #expect(try JSONDecoder().decode(LaunchSettings.self, from: data) == s)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["launcher"] as? String == "command")
        #expect(object["diskDelivery"] as? String == "qcow2")
        #expect(object["recoveryNetwork"] as? String == "tap:tap3")
        #expect(object["checks"] as? [String] == ["serial:login:", "http:443:/status:204"])
        #expect(Set(object.keys) == [
            "launcher", "command", "diskDelivery", "vcpus", "memoryMiB", "recoveryNetwork", "recoveryAddress", "checks",
            "checkTimeoutSeconds", "forwardPorts", "qemuArguments",
        ])
    }

    @Test("decoding validates: out-of-range values are launch.bad-settings, unknown enum values fail to decode")
    func decodingValidates() {
        expectLifeboatError("launch.bad-settings") { _ = try JSONDecoder().decode(LaunchSettings.self, from: json(#"{"vcpus": 0}"#)) }
        expectLifeboatError("launch.bad-settings") { _ = try JSONDecoder().decode(LaunchSettings.self, from: json(#"{"launcher": "command"}"#)) }
        expectLifeboatError("launch.bad-check") { _ = try JSONDecoder().decode(LaunchSettings.self, from: json(#"{"checks": ["tcp:0"]}"#)) }
        expectLifeboatError("launch.bad-network") { _ = try JSONDecoder().decode(LaunchSettings.self, from: json(#"{"recoveryNetwork": "wifi"}"#)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(LaunchSettings.self, from: json(#"{"launcher": "docker"}"#)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(LaunchSettings.self, from: json(#"{"diskDelivery": "vmdk"}"#)) }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(LaunchSettings.self, from: json(#"{"vcpus": "two"}"#)) }
    }

    @Test("validate: vCPUs 1-64, memory 64 MiB-1 TiB, check timeout 1 s-24 h, forwarded ports 1-65535")
    func validateBounds() throws {
        func settings(_ change: (inout LaunchSettings) -> Void) -> LaunchSettings {
            var s = LaunchSettings()
            change(&s)
            return s
        }
        let accepted: [LaunchSettings] = [
            settings { $0.vcpus = 1 }, settings { $0.vcpus = 64 },
            settings { $0.memoryMiB = 64 }, settings { $0.memoryMiB = 1_048_576 },
            settings { $0.checkTimeoutSeconds = 1 }, settings { $0.checkTimeoutSeconds = 86_400 },
            settings { $0.forwardPorts = [1, 65535] },
        ]
        for ok in accepted {
            try ok.validate()
        }
        let vcpus = expectLifeboatError("launch.bad-settings") { try settings { $0.vcpus = 0 }.validate() }
        #expect(vcpus?.message == "vcpus must be 1 to 64, got 0")
        expectLifeboatError("launch.bad-settings") { try settings { $0.vcpus = 65 }.validate() }
        let memory = expectLifeboatError("launch.bad-settings") { try settings { $0.memoryMiB = 63 }.validate() }
        #expect(memory?.message == "memory must be 64 MiB to 1 TiB, got 63 MiB")
        expectLifeboatError("launch.bad-settings") { try settings { $0.memoryMiB = 1_048_577 }.validate() }
        let timeout = expectLifeboatError("launch.bad-settings") { try settings { $0.checkTimeoutSeconds = 0 }.validate() }
        #expect(timeout?.message == "the check timeout must be 1 s to 24 h, got 0 s")
        expectLifeboatError("launch.bad-settings") { try settings { $0.checkTimeoutSeconds = 86_401 }.validate() }
        let port = expectLifeboatError("launch.bad-settings") { try settings { $0.forwardPorts = [22, 0] }.validate() }
        #expect(port?.message == "forwarded port 0 is not 1-65535")
        expectLifeboatError("launch.bad-settings") { try settings { $0.forwardPorts = [65536] }.validate() }
    }

    @Test("validate: the command launcher needs an absolute executable path; QEMU ignores the command")
    func validateCommand() throws {
        var s = LaunchSettings()
        s.launcher = .command
        let missing = expectLifeboatError("launch.bad-settings") { try s.validate() }
        #expect(missing?.message.contains("--launcher-command PATH") == true)
        s.command = "launch.sh"
        expectLifeboatError("launch.bad-settings") { try s.validate() }
        s.command = ""
        expectLifeboatError("launch.bad-settings") { try s.validate() }
        s.command = "/opt/launch.sh"
        try s.validate()

        var q = LaunchSettings()
        q.command = "relative"
        try q.validate()
    }

    @Test("guestPorts: the checks' ports and the forwarded ports, sorted, each once")
    func guestPorts() {
        var s = LaunchSettings()
        s.checks = [
            .http(port: 8080, path: "/", status: 200, bodyPattern: nil), .serial(pattern: "x"), .tcp(port: 22),
            .command("true"), .tcp(port: 8080),
        ]
        s.forwardPorts = [3389, 22, 443]
        #expect(s.guestPorts == [22, 443, 3389, 8080])
        s.checks = [.serial(pattern: "READY")]
        s.forwardPorts = []
        #expect(s.guestPorts.isEmpty)
    }
}

@Suite("Launch vocabulary")
struct LaunchVocabularyTests {
    @Test("modes, job and launch states use DRS's names")
    func rawValues() {
        #expect(LaunchMode.allCases.map(\.rawValue) == ["TEST", "RECOVERY"])
        #expect(JobType.launch.rawValue == "LAUNCH" && JobType.terminate.rawValue == "TERMINATE")
        #expect(JobInitiator.startDrill.rawValue == "START_DRILL")
        #expect(JobInitiator.startRecovery.rawValue == "START_RECOVERY")
        #expect(JobInitiator.terminateRecoveryInstances.rawValue == "TERMINATE_RECOVERY_INSTANCES")
        #expect([JobStatus.pending, .started, .completed].map(\.rawValue) == ["PENDING", "STARTED", "COMPLETED"])
        #expect(
            [LaunchStatus.pending, .inProgress, .launched, .failed, .terminated].map(\.rawValue)
                == ["PENDING", "IN_PROGRESS", "LAUNCHED", "FAILED", "TERMINATED"]
        )
        #expect(
            [DRLifecycle.notTested, .testedRecently, .testOverdue, .testFailed, .recoveryLaunched].map(\.rawValue)
                == ["NOT_TESTED", "TESTED_RECENTLY", "TEST_OVERDUE", "TEST_FAILED", "RECOVERY_LAUNCHED"]
        )
    }

    @Test("job event kinds are distinct upper-case names, DRS's among them")
    func eventKinds() {
        let names = JobEventKind.allCases.map(\.rawValue)
        #expect(Set(names).count == names.count)
        for name in names {
            #expect(name.allSatisfy { ("A"..."Z").contains($0) || $0 == "_" }, "\(name)")
        }
        for drs in ["JOB_START", "SERVER_SKIPPED", "SNAPSHOT_START", "SNAPSHOT_END", "SNAPSHOT_FAIL", "CONVERSION_START",
                    "CONVERSION_END", "CONVERSION_FAIL", "LAUNCH_START", "LAUNCH_END", "LAUNCH_FAILED", "CLEANUP_START",
                    "CLEANUP_END", "CLEANUP_FAIL", "JOB_END"] {
            #expect(JobEventKind(rawValue: drs) != nil, "\(drs)")
        }
        #expect(JobEventKind.checkPassed.rawValue == "CHECK_PASSED")
        #expect(JobEventKind.launcherOutput.rawValue == "LAUNCHER_OUTPUT")
    }

    @Test("instances hold resources until they failed or were terminated")
    func holdsResources() {
        let holding: [InstanceState] = [.pending, .launching, .running, .stopped, .terminating]
        for state in holding { #expect(state.holdsResources, "\(state)") }
        #expect(!InstanceState.failed.holdsResources)
        #expect(!InstanceState.terminated.holdsResources)
        let all: [InstanceState] = [.pending, .launching, .running, .stopped, .failed, .terminating, .terminated]
        #expect(all.map(\.rawValue) == ["PENDING", "LAUNCHING", "RUNNING", "STOPPED", "FAILED", "TERMINATING", "TERMINATED"])
    }

    @Test("effective lifecycle: TESTED_RECENTLY turns TEST_OVERDUE only after 30 days")
    func effectiveLifecycle() {
        let passed = Timestamp(seconds: 1_790_000_000)
        let thirtyDays = Int64(30 * 86_400) * 1_000_000_000
        #expect(DRLifecycle.testInterval == 30 * 86_400)
        func at(_ offset: Int64) -> Timestamp { Timestamp(nanoseconds: passed.nanoseconds + offset) }
        #expect(DRLifecycle.effective(stored: .testedRecently, lastTestPassed: passed, now: passed) == .testedRecently)
        #expect(DRLifecycle.effective(stored: .testedRecently, lastTestPassed: passed, now: at(thirtyDays)) == .testedRecently)
        #expect(DRLifecycle.effective(stored: .testedRecently, lastTestPassed: passed, now: at(thirtyDays + 1)) == .testOverdue)
        #expect(DRLifecycle.effective(stored: .testedRecently, lastTestPassed: passed, now: at(365 * 86_400 * 1_000_000_000)) == .testOverdue)
        // Without a date there is nothing to age.
        #expect(DRLifecycle.effective(stored: .testedRecently, lastTestPassed: nil, now: at(thirtyDays * 10)) == .testedRecently)
        // The drillOverdueDays setting moves the line: 7 days.
        let week = Int64(7 * 86_400)
        #expect(DRLifecycle.effective(stored: .testedRecently, lastTestPassed: passed, now: at(week * 1_000_000_000), overdueAfter: week) == .testedRecently)
        #expect(DRLifecycle.effective(stored: .testedRecently, lastTestPassed: passed, now: at(week * 1_000_000_000 + 1), overdueAfter: week) == .testOverdue)
        // Other states are shown as stored, however old the last drill.
        for stored in [DRLifecycle.notTested, .testFailed, .recoveryLaunched, .testOverdue] {
            #expect(DRLifecycle.effective(stored: stored, lastTestPassed: passed, now: at(thirtyDays * 10)) == stored)
            #expect(DRLifecycle.effective(stored: stored, lastTestPassed: nil, now: passed) == stored)
        }
    }

    @Test("identifiers: prefix, dash, 16 lower-case hex digits, all different")
    func identifiers() {
        var seen = Set<String>()
        for prefix in ["job", "ri"] {
            for _ in 0..<500 {
                let id = LaunchIdentifiers.make(prefix)
                #expect(id.hasPrefix(prefix + "-"))
                let suffix = id.dropFirst(prefix.count + 1)
                #expect(suffix.count == 16, "\(id)")
                #expect(suffix.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }, "\(id)")
                seen.insert(id)
            }
        }
        #expect(seen.count == 1000)
    }
}
