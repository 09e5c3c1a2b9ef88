import Agent
import Foundation
import LifeboatCore
import LifeboatTesting
import Logging
import Testing

/// A 64 MiB ext4 filesystem in an image file on a loop device, mounted under a temporary directory.
/// `close()` (also run on deinit) thaws, unmounts and detaches whatever was set up, also after a failure.
final class FreezerLoopFilesystem {
    let image: String
    let mountPoint: String
    private(set) var device = ""
    private var mounted = false

    init(in dir: TemporaryDirectory, name: String) throws {
        image = dir.child(name + ".img")
        mountPoint = dir.child(name)
        do {
            try FileTools.write(image, [])
            try FileTools.truncate(image, to: Int64(64 * MiB))
            try Self.mustRun("/usr/sbin/mkfs.ext4", ["-q", "-F", image])
            device = try Self.mustRun("/usr/sbin/losetup", ["--find", "--show", image])
                .trimmingCharacters(in: .whitespacesAndNewlines)
            try FileTools.makeDirectory(mountPoint)
            try Self.mustRun("/usr/bin/mount", [device, mountPoint])
            mounted = true
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    func close() {
        if mounted {
            _ = try? Processes.run("/usr/sbin/fsfreeze", ["-u", mountPoint])
            // A writer still finishing keeps the filesystem busy for a moment; detach lazily as a last resort.
            var unmounted = false
            for _ in 0..<50 where !unmounted {
                unmounted = (try? Processes.run("/usr/bin/umount", [mountPoint]))?.status == 0
                if !unmounted { usleep(100_000) }
            }
            if !unmounted { _ = try? Processes.run("/usr/bin/umount", ["-l", mountPoint]) }
            mounted = false
        }
        if !device.isEmpty {
            _ = try? Processes.run("/usr/sbin/losetup", ["-d", device])
            device = ""
        }
    }

    /// Whether a child process can write and sync a file here within 20 seconds.
    func isWritable(_ file: String = "probe") throws -> Bool {
        let path = mountPoint + "/" + file
        let r = try Processes.run(
            "/usr/bin/timeout",
            ["20", "/usr/bin/dd", "if=/dev/zero", "of=\(path)", "bs=4096", "count=1", "conv=fsync", "status=none"]
        )
        return r.status == 0
    }

    /// Starts `dd` writing one 4 KiB block to `file` here, without waiting for it.
    func startWriter(_ file: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/dd")
        p.arguments = ["if=/dev/zero", "of=\(mountPoint)/\(file)", "bs=4096", "count=1", "conv=fsync", "status=none"]
        try p.run()
        return p
    }

    @discardableResult
    static func mustRun(_ tool: String, _ arguments: [String]) throws -> String {
        let r = try Processes.run(tool, arguments)
        guard r.status == 0 else {
            throw LifeboatError(
                "test.tool",
                "\(tool) \(arguments.joined(separator: " ")) failed (\(r.status)): \(r.stderr)"
            )
        }
        return r.stdout
    }
}

/// Whether a process sleeps in the kernel waiting for a frozen filesystem: state `D`, and where the kernel
/// tells (`wchan`), in the wait of `sb_start_write`.
private func isBlockedOnFreeze(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")"),
        stat[stat.index(after: close)...].first(where: { !$0.isWhitespace }) == "D"
    else { return false }
    let wchan = (try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)) ?? ""
    return wchan.isEmpty || wchan == "0" || wchan.contains("rwsem")
}

/// Polls `condition` every 10 ms for up to `seconds`; true as soon as it holds.
private func eventually(within seconds: Double = 20, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

private struct BodyFailed: Error {}

private let logger = Logger(label: "lifeboat.test.freezer")

@Suite(.serialized, .enabled(if: getuid() == 0, "loop devices, mount and FIFREEZE need root"))
struct FreezerTests {
    @Test func findsMountsOfDeviceAndImage() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-freeze")
        // A space in the mount point exercises mountinfo's octal escapes.
        let fs = try FreezerLoopFilesystem(in: dir, name: "mount point")
        defer { fs.close() }
        let elsewhere = dir.child("state")

        #expect(try Freezer.mountPoints(onVolumes: [fs.device], excludingPath: elsewhere) == [fs.mountPoint])
        #expect(try Freezer.mountPoints(onVolumes: [fs.image], excludingPath: elsewhere) == [fs.mountPoint])
        #expect(
            try Freezer.mountPoints(onVolumes: [fs.image, fs.device], excludingPath: elsewhere) == [fs.mountPoint],
            "one entry per filesystem"
        )
        // The agent's state directory (existing or not yet) keeps its filesystem thawed.
        #expect(try Freezer.mountPoints(onVolumes: [fs.device], excludingPath: fs.mountPoint + "/state/x").isEmpty)
        #expect(try Freezer.mountPoints(onVolumes: [fs.image], excludingPath: fs.mountPoint).isEmpty)

        let other = dir.child("other.img")
        try FileTools.write(other, [0])
        #expect(try Freezer.mountPoints(onVolumes: [other], excludingPath: elsewhere).isEmpty, "no loop device")
        #expect(throws: LifeboatError.self) {
            try Freezer.mountPoints(onVolumes: [dir.child("none")], excludingPath: elsewhere)
        }
        do {
            _ = try Freezer.mountPoints(onVolumes: [dir.path], excludingPath: elsewhere)
            Issue.record("a directory is not a volume")
        } catch {
            #expect((error as? LifeboatError)?.code == "volume.unsupported")
        }
    }

    @Test func freezesRunsAndThaws() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-freeze")
        let fs = try FreezerLoopFilesystem(in: dir, name: "fs")
        defer { fs.close() }
        let freezer = Freezer(mountPoints: [fs.mountPoint], logger: logger)

        var writer: Process?
        var blocked = false
        var createdWhileFrozen = true
        let result = try freezer.withFrozen(maxDuration: .seconds(60)) { () throws -> Int in
            let p = try fs.startWriter("during")
            writer = p
            blocked = eventually { isBlockedOnFreeze(p.processIdentifier) }
            createdWhileFrozen = FileTools.exists(fs.mountPoint + "/during")
            return 42
        }
        #expect(result.value == 42)
        #expect(result.frozenFor > .zero)
        #expect(blocked, "the writer blocks in the kernel while the filesystem is frozen")
        #expect(!createdWhileFrozen, "the writer's file does not appear while frozen")
        let p = try #require(writer)
        try #require(eventually { !p.isRunning }, "the writer finishes after the thaw")
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(try FileTools.size(fs.mountPoint + "/during") == 4096)
    }

    @Test func watchdogThawsWhenBodyOverruns() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-freeze")
        let fs = try FreezerLoopFilesystem(in: dir, name: "fs")
        defer { fs.close() }
        let freezer = Freezer(mountPoints: [fs.mountPoint], logger: logger)

        // The body waits for a write that can only complete once the watchdog has thawed the filesystem.
        var finishedInBody = false
        do {
            _ = try freezer.withFrozen(maxDuration: .milliseconds(200)) {
                let p = try fs.startWriter("overrun")
                finishedInBody = eventually(within: 30) { !p.isRunning }
                guard finishedInBody else { return Int32(-1) }  // still blocked: the final thaw releases it
                p.waitUntilExit()
                return p.terminationStatus
            }
            Issue.record("a body that outlives maxDuration must not succeed")
        } catch let error as LifeboatError {
            #expect(error.code == "freeze.timeout")
            #expect(error.message.contains("200 ms"), "\(error.message)")
        }
        #expect(finishedInBody, "the watchdog thawed while the body still ran")
        #expect(try fs.isWritable())
    }

    @Test func nothingToFreezeHasNoDeadline() throws {
        // Image files or raw disks without a mounted filesystem: no writer is blocked, so a slow final capture
        // (a full scan of a large image) is not cut short by the maximum freeze time.
        let freezer = Freezer(mountPoints: [], logger: logger)
        let result = try freezer.withFrozen(maxDuration: .milliseconds(20)) { () -> Int in
            usleep(200_000)
            return 7
        }
        #expect(result.value == 7)
        #expect(result.frozenFor == .zero)
    }

    @Test func thawsWhenBodyThrows() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-freeze")
        let fs = try FreezerLoopFilesystem(in: dir, name: "fs")
        defer { fs.close() }
        let freezer = Freezer(mountPoints: [fs.mountPoint], logger: logger)

        #expect(throws: BodyFailed.self) {
            _ = try freezer.withFrozen(maxDuration: .seconds(60)) { () throws -> Int in throw BodyFailed() }
        }
        #expect(try fs.isWritable())
    }

    @Test func alreadyFrozenFailsAndLeavesNothingFrozen() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-freeze")
        let a = try FreezerLoopFilesystem(in: dir, name: "a")
        defer { a.close() }
        let b = try FreezerLoopFilesystem(in: dir, name: "b")
        defer { b.close() }
        try FreezerLoopFilesystem.mustRun("/usr/sbin/fsfreeze", ["-f", b.mountPoint])
        defer { _ = try? Processes.run("/usr/sbin/fsfreeze", ["-u", b.mountPoint]) }

        // `a` is frozen first, then `b` fails: `a` must be thawed again.
        let freezer = Freezer(mountPoints: [b.mountPoint, a.mountPoint], logger: logger)
        #expect(freezer.mountPoints == [a.mountPoint, b.mountPoint])
        var ran = false
        do {
            _ = try freezer.withFrozen(maxDuration: .seconds(60)) { ran = true }
            Issue.record("freezing an already frozen filesystem must fail")
        } catch let error as LifeboatError {
            #expect(error.code == "freeze.failed")
            #expect(error.message.contains("already frozen"), "\(error.message)")
            #expect(error.message.contains(b.mountPoint))
        }
        #expect(!ran)
        #expect(try a.isWritable())

        try FreezerLoopFilesystem.mustRun("/usr/sbin/fsfreeze", ["-u", b.mountPoint])
        #expect(try b.isWritable())
    }
}
