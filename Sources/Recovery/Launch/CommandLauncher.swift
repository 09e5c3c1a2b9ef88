#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
public import Foundation
import LifeboatCore
import NIOPosix

/// Launches through an operator's executable: how Lifeboat drives libvirt, Proxmox, OpenStack or a cloud.
///
/// The executable gets one JSON object on stdin and its exit status decides:
///
/// ```json
/// {"action": "launch", "instance": "ri-…", "job": "job-…", "machine": "web", "mode": "TEST",
///  "point": {"id": "…", "captureTime": "2026-11-30T10:00:00Z"},
///  "disks": [{"volume": "root", "size": 1073741824, "nbdURI": "nbd://127.0.0.1:10809/ri-…-root",
///             "imagePath": null, "imageFormat": null}],
///  "network": {"isolated": true, "recoveryNetwork": "user", "guestPorts": [80]},
///  "vcpus": 1, "memoryMiB": 512, "directory": "/var/lib/lifeboat/instances/ri-…"}
/// ```
///
/// Exit 0 means started. If the last line of its stdout is a JSON object, Lifeboat keeps it and reads
/// `address` (where checks reach the machine), `ports` (guest port → port at that address) and `console` (a file
/// with the serial console). For `"action": "terminate"` the same fields come back with `"launched"` holding that
/// object. Everything it prints goes into the job log, with its exit status.
public struct CommandLauncher: Launcher {
    public let kind = "command"
    /// How long the executable may take.
    public var timeout: Duration

    public init(timeout: Duration = .seconds(900)) {
        self.timeout = timeout
    }

    public func launch(_ request: LaunchRequest, log: @escaping @Sendable (String) -> Void) async throws -> InstanceRuntime {
        let input = try Self.describe(request, action: "launch", launched: nil)
        let result = try await run(request, input: input, log: log)
        var runtime = InstanceRuntime(launcher: kind)
        runtime.disks = request.disks
        guard let answer = result.answer else { return runtime }
        runtime.launcherData = answer.text
        runtime.host = answer.object["address"] as? String
        runtime.consoleLog = answer.object["console"] as? String
        if let ports = answer.object["ports"] as? [String: Any] {
            for (guest, host) in ports {
                if let g = Int(guest), let h = (host as? Int) ?? (host as? String).flatMap({ Int($0) }) { runtime.ports[g] = h }
            }
        }
        return runtime
    }

    public func isRunning(_ runtime: InstanceRuntime) -> Bool? { nil }

    public func terminate(_ runtime: InstanceRuntime, request: LaunchRequest, log: @escaping @Sendable (String) -> Void) async throws {
        let input = try Self.describe(request, action: "terminate", launched: runtime.launcherData)
        _ = try await run(request, input: input, log: log)
    }

    /// The JSON handed to the executable.
    public static func describe(_ request: LaunchRequest, action: String, launched: String?) throws -> Data {
        var object: [String: Any] = [
            "action": action,
            "instance": request.instance,
            "job": request.job,
            "machine": request.machine,
            "mode": request.mode.rawValue,
            "point": ["id": String(format: "%016llx", request.point), "captureTime": request.pointCaptureTime.rfc3339],
            "disks": request.disks.map { disk -> [String: Any] in
                [
                    "volume": disk.volume, "size": disk.size,
                    "nbdURI": disk.nbdURI ?? NSNull(), "imagePath": disk.imagePath ?? NSNull(),
                    "imageFormat": disk.imageFormat ?? NSNull(),
                ]
            },
            "network": [
                "isolated": request.mode == .test,
                "recoveryNetwork": request.settings.recoveryNetwork.description,
                "guestPorts": request.settings.guestPorts,
            ],
            "vcpus": request.settings.vcpus,
            "memoryMiB": request.settings.memoryMiB,
            "directory": request.directory,
        ]
        if let launched, let data = launched.data(using: .utf8), let value = try? JSONSerialization.jsonObject(with: data) {
            object["launched"] = value
        }
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    }

    struct Answer {
        var text: String
        var object: [String: Any]
    }

    struct Result {
        var status: Int32
        var output: String
        var answer: Answer?
    }

    private func run(_ request: LaunchRequest, input: Data, log: @escaping @Sendable (String) -> Void) async throws -> Result {
        guard let executable = request.settings.command else {
            throw LifeboatError("launch.bad-settings", "machine \(request.machine) uses the command launcher but has no --launcher-command")
        }
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let outcome = try await LaunchThreads.pool.runIfActive {
            try ChildProcess.run(executable, [], input: input, timeout: seconds)
        }
        let stdout = String(decoding: outcome.stdout, as: UTF8.self)
        let stderr = String(decoding: outcome.stderr, as: UTF8.self)
        // The job log gets what it said, bounded.
        for (name, text) in [("stdout", stdout), ("stderr", stderr)] where !text.isEmpty {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            log("\(executable) \(name): " + (trimmed.count > 2000 ? "…" + trimmed.suffix(2000) : trimmed))
        }
        if outcome.timedOut {
            throw LifeboatError("launch.command-timeout", "\(executable) did not finish within \(seconds == seconds.rounded() ? "\(Int(seconds))" : String(format: "%.1f", seconds)) s and was killed")
        }
        log("\(executable) exited \(outcome.status)")
        guard outcome.status == 0 else {
            let last = stderr.split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
            throw LifeboatError("launch.command-failed", "\(executable) exited \(outcome.status)" + (last.isEmpty ? "" : ": \(last)"))
        }
        var answer: Answer?
        if let line = stdout.split(whereSeparator: \.isNewline).last(where: { !$0.allSatisfy(\.isWhitespace) }),
            line.first == "{", let data = String(line).data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        {
            answer = Answer(text: String(line), object: object)
        }
        return Result(status: outcome.status, output: stdout, answer: answer)
    }
}

/// A child process with stdin given and stdout/stderr collected (bounded), killed after a timeout.
enum ChildProcess {
    struct Outcome {
        var status: Int32
        var stdout: [UInt8]
        var stderr: [UInt8]
        var timedOut: Bool
    }

    static func run(_ executable: String, _ arguments: [String], input: Data, timeout: TimeInterval) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        do {
            try process.run()
        } catch {
            throw LifeboatError("launch.spawn-failed", "cannot run \(executable): check that it exists and is executable", cause: error)
        }
        let collected = [LockedValue<[UInt8]>([]), LockedValue<[UInt8]>([])]
        let done = DispatchGroup()
        for (index, pipe) in [stdout, stderr].enumerated() {
            done.enter()
            Thread {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                let bytes = Array(data.suffix(256 * 1024))
                collected[index].value = bytes
                done.leave()
            }.start()
        }
        signal(SIGPIPE, SIG_IGN)
        try? stdin.fileHandleForWriting.write(contentsOf: input)
        try? stdin.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() >= deadline {
                timedOut = true
                process.terminate()
                usleep(500_000)
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                break
            }
            usleep(20_000)
        }
        process.waitUntilExit()
        _ = done.wait(timeout: .now() + 5)
        let (out, err) = (collected[0].value, collected[1].value)
        return Outcome(status: process.terminationStatus, stdout: out, stderr: err, timedOut: timedOut)
    }
}
