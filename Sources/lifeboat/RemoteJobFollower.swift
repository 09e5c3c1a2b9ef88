#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import ArgumentParser
import ControlPlaneClient
import Foundation
import LifeboatAPI
import LifeboatCore

/// Follows a job through the API: prints its log as it grows and, on a terminal, a progress bar on stderr
/// (each machine moves through snapshot, disks, start, checks, done).
struct RemoteJobFollower {
    let client: APIClient
    let job: String
    var quiet = false

    func follow() async throws -> JobDTO {
        var last: Int64 = 0
        let started = ContinuousClock.now
        var hinted = false
        let bar = ProgressBar(enabled: !quiet && isatty(2) == 1)
        var phases: [String: Int] = [:]
        while true {
            let events: [JobEventDTO] = try await client.get("jobs/\(segment(job))/events", query: ["after": "\(last)"])
            let record: JobDTO = try await client.get("jobs/\(segment(job))")
            for event in events {
                last = event.id
                if let machine = event.machine { phases[machine] = max(phases[machine] ?? 0, Self.phase(of: event.kind)) }
                if !quiet {
                    bar.clear()
                    print(RemoteJobText.line(event))
                }
            }
            let total = max(1, record.items.count) * 4
            let done = record.items.reduce(0) { sum, item in
                sum + (["LAUNCHED", "FAILED", "TERMINATED"].contains(item.launchStatus) ? 4 : phases[item.machine] ?? 0)
            }
            if record.status == "COMPLETED" {
                bar.clear()
                return record
            }
            bar.show(done: done, total: total, label: "job \(job) \(record.status)")
            if record.status == "PENDING" && !hinted && ContinuousClock.now - started > .seconds(10) {
                bar.clear()
                printError("job \(job) is still PENDING: is the server's launch service running?")
                hinted = true
            }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    /// How far a machine got: 1 point pinned, 2 disks ready, 3 machine started, 4 checked.
    static func phase(of kind: String) -> Int {
        switch kind {
        case "SNAPSHOT_START", "SNAPSHOT_END": 1
        case "CONVERSION_START", "CONVERSION_END": 2
        case "LAUNCH_START", "MACHINE_STARTED", "CONSOLE", "LAUNCHER_OUTPUT": 3
        case "CHECK_PASSED", "CHECK_FAILED", "LAUNCH_END", "LAUNCH_FAILED", "CLEANUP_START", "CLEANUP_END": 4
        default: 0
        }
    }
}

/// A one-line progress bar on stderr, redrawn in place.
struct ProgressBar {
    let enabled: Bool

    func show(done: Int, total: Int, label: String) {
        guard enabled else { return }
        let width = 30
        let filled = min(width, width * done / max(total, 1))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let percent = 100 * done / max(total, 1)
        fputs("\r\(bar) \(percent)% \(label)\u{1B}[K", stderr)
        fflush(stderr)
    }

    func clear() {
        guard enabled else { return }
        fputs("\r\u{1B}[K", stderr)
        fflush(stderr)
    }
}

enum RemoteJobText {
    struct WithEvents: Encodable {
        var job: JobDTO
        var events: [JobEventDTO]
    }

    static func line(_ e: JobEventDTO) -> String {
        var text = "\(e.time)  \(e.kind.padding(toLength: 16, withPad: " ", startingAt: 0)) "
        if let machine = e.machine { text += "\(machine): " }
        text += e.detail
        if let error = e.error { text += " — error: \(error)" }
        return terminalSafe(text)
    }

    static func summary(_ job: JobDTO) {
        print("job \(job.id) \(job.status)" + (job.incident.map { " (incident \($0))" } ?? ""))
        printTable(
            ["MACHINE", "INSTANCE", "POINT", "STATUS", "RTO", "ERROR"],
            job.items.map { item in
                [
                    item.machine, item.instance, item.point ?? "-", item.launchStatus,
                    item.rtoSeconds.map { String(format: "%.1fs", $0) } ?? "-", item.error ?? "",
                ]
            }
        )
    }
}
