#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import Foundation
import LifeboatCore

/// A small bootable test disk built by `scripts/make-boot-disk`: MBR, one ext4 partition, extlinux, the host's
/// Debian kernel and a busybox userland whose init serves `/srv/www/index.html` on port 80 (static address
/// 10.0.2.15/24 for QEMU user networking) and then prints `LIFEBOAT-READY` on the serial console.
///
/// When QEMU is started with `egressProbeArguments(host:port:)`, the guest also tries to fetch
/// `http://HOST:PORT/` once and prints `LIFEBOAT-EGRESS open …` or `LIFEBOAT-EGRESS blocked …`.
///
/// Building needs root and a loop device; the script names any missing Debian package.
public enum BootDisk {
    /// 64 MiB, sparse: the script's default.
    public static let defaultSize = 64 * MiB
    /// What the guest serves when no text is given (the script's default file).
    public static let defaultServedText = "lifeboat fixture v1\n"
    /// The line the guest prints on the serial console once the web server runs.
    public static let readyMarker = "LIFEBOAT-READY"
    /// The prefix of the guest's egress-check line, followed by `open` or `blocked` and the target.
    public static let egressMarker = "LIFEBOAT-EGRESS"

    /// The package root, found from this file's place in `Sources/LifeboatTesting/`.
    public static var packageRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    /// `scripts/make-boot-disk` in this package.
    public static var script: String { packageRoot + "/scripts/make-boot-disk" }

    /// QEMU arguments that ask the guest to try `http://host:port/` (an SMBIOS OEM string the guest's init reads).
    public static func egressProbeArguments(host: String = "10.0.2.2", port: Int) -> [String] {
        ["-smbios", "type=11,value=lifeboat-egress=\(host):\(port)"]
    }

    /// Builds a disk image at `path` (replacing it), `size` bytes (sparse), serving `servedText`.
    ///
    /// - Throws: `test.boot-disk` with the script's output when the build fails (not root, no loop device,
    ///   a missing package: the message names it).
    public static func make(at path: String, size: Int = defaultSize, servedText: String = defaultServedText) throws {
        var arguments = [path, "--size", "\(size)"]
        var servedFile: String?
        if servedText != defaultServedText {
            let file = path + ".served"
            try FileTools.write(file, Array(servedText.utf8))
            servedFile = file
            arguments += ["--served-file", file]
        }
        defer { if let servedFile { unlink(servedFile) } }
        let result: ProcessResult
        do {
            result = try Processes.run(script, arguments)
        } catch {
            throw LifeboatError("test.boot-disk", "cannot run \(script)", cause: error)
        }
        guard result.status == 0 else {
            let output = (result.stderr + result.stdout).trimmingCharacters(in: .whitespacesAndNewlines)
            throw LifeboatError("test.boot-disk", "\(script) exited \(result.status): \(output)")
        }
    }

    /// A disk built at most once per test process for each `size` and `servedText`: tests that only boot
    /// it (through a copy-on-write overlay or a snapshot) share one build. Concurrent callers wait for it.
    /// The files live in `/tmp/lifeboat-bootdisk-PID/`; directories of processes that no longer run are removed.
    public static func cached(size: Int = defaultSize, servedText: String = defaultServedText) throws -> String {
        try cache.withLock {
            let key = Key(size: size, servedText: servedText)
            if let path = cache.built[key] { return path }
            let directory = try cache.directory()
            let path = directory + "/disk-\(cache.built.count).img"
            try make(at: path, size: size, servedText: servedText)
            cache.built[key] = path
            return path
        }
    }

    /// The byte offset of the disk's one partition (the script puts it at 1 MiB).
    public static let partitionOffset = 1024 * 1024

    /// Changes the file the guest serves, in place on an existing disk image: mounts its partition through a
    /// loop device, writes `/srv/www/index.html`, unmounts. Needs root.
    ///
    /// - Throws: `test.boot-disk` with the failing command's output.
    public static func replaceServedText(image: String, text: String) throws {
        let mountPoint = image + ".mnt"
        try? FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: mountPoint) }
        func run(_ executable: String, _ arguments: [String]) throws {
            let result = try Processes.run(executable, arguments)
            guard result.status == 0 else {
                throw LifeboatError("test.boot-disk", "\(executable) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
            }
        }
        try run("/bin/mount", ["-o", "loop,offset=\(partitionOffset)", image, mountPoint])
        do {
            try FileTools.write(mountPoint + "/srv/www/index.html", Array(text.utf8))
        } catch {
            try? run("/bin/umount", [mountPoint])
            throw error
        }
        try run("/bin/umount", [mountPoint])
    }

    private struct Key: Hashable {
        var size: Int
        var servedText: String
    }

    private static let cache = Cache()

    /// The builds of this process, behind a lock held for the whole build.
    private final class Cache: @unchecked Sendable {
        private let lock = PlainLock()
        var built: [Key: String] = [:]
        private var made: String?

        func withLock<T>(_ body: () throws -> T) rethrows -> T { try lock.withLock(body) }

        /// This process's directory, created on first use after removing those of dead processes.
        func directory() throws -> String {
            if let made { return made }
            let prefix = "lifeboat-bootdisk-"
            let names = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
            for name in names where name.hasPrefix(prefix) {
                guard let pid = Int32(name.dropFirst(prefix.count)), pid != getpid() else { continue }
                if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(atPath: "/tmp/" + name) }
            }
            let path = "/tmp/\(prefix)\(getpid())"
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw LifeboatError("test.boot-disk", "cannot create \(path)", cause: error)
            }
            made = path
            return path
        }
    }
}
