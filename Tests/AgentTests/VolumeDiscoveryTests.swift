import Agent
import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

@Suite struct VolumeDiscoveryTests {
    /// A fake /sys/block: one directory per device with `removable` and `size` (in 512-byte sectors).
    private func fakeSysBlock(_ devices: [(name: String, removable: Bool, sectors: Int)]) throws -> TemporaryDirectory {
        let dir = try TemporaryDirectory(prefix: "lifeboat-sysblock")
        for device in devices {
            let base = dir.child(device.name)
            try FileTools.makeDirectory(base)
            try FileTools.write(base + "/removable", Array((device.removable ? "1\n" : "0\n").utf8))
            try FileTools.write(base + "/size", Array("\(device.sectors)\n".utf8))
        }
        return dir
    }

    @Test func localDisksSkipsWhatIsNotALocalDisk() throws {
        let sys = try fakeSysBlock([
            ("vda", false, 2048),
            ("sdb", true, 4096),  // removable (a USB stick)
            ("loop0", false, 100),
            ("loop12", false, 100),
            ("ram0", false, 8192),
            ("zram0", false, 8192),
            ("sr0", false, 2048),
            ("nbd3", false, 2048),
            ("sdc", false, 0),  // card reader without a card
            ("nvme0n1", false, 1_953_525_168),
            ("md127", false, 16),
            ("dm-0", false, 32),
            ("cciss!c0d0", false, 64),
        ])
        let disks = try VolumeDiscovery.localDisks(sysBlock: sys.path)
        #expect(
            disks == [
                DiscoveredVolume(name: "cciss!c0d0", path: "/dev/cciss/c0d0", size: 64 * 512),
                DiscoveredVolume(name: "dm-0", path: "/dev/dm-0", size: 32 * 512),
                DiscoveredVolume(name: "md127", path: "/dev/md127", size: 16 * 512),
                DiscoveredVolume(name: "nvme0n1", path: "/dev/nvme0n1", size: 1_953_525_168 * 512),
                DiscoveredVolume(name: "vda", path: "/dev/vda", size: 2048 * 512),
            ]
        )
    }

    @Test func localDisksOfAnEmptyTree() throws {
        let sys = try fakeSysBlock([])
        #expect(try VolumeDiscovery.localDisks(sysBlock: sys.path) == [])
    }

    @Test func localDisksOfThisMachine() throws {
        for disk in try VolumeDiscovery.localDisks() {
            #expect(disk.size > 0)
            #expect(disk.path.hasPrefix("/dev/"))
            #expect(!disk.name.hasPrefix("loop"))
        }
    }

    @Test func describesAnImageFile() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-volume")
        let path = dir.child("web.img")
        try FileTools.write(path, [UInt8](repeating: 7, count: 12_345))
        #expect(try VolumeDiscovery.describe(path: path) == DiscoveredVolume(name: "web.img", path: path, size: 12_345))
    }

    @Test(.enabled(if: getuid() == 0, "losetup needs root"))
    func describesALoopDevice() throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-volume")
        let image = dir.child("disk.img")
        try FileTools.write(image, [])
        try FileTools.truncate(image, to: Int64(3 * MiB))
        let attach = try Processes.run("/usr/sbin/losetup", ["--find", "--show", image])
        try #require(attach.status == 0, "losetup failed: \(attach.stderr)")
        let device = attach.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Processes.run("/usr/sbin/losetup", ["-d", device]) }

        let volume = try VolumeDiscovery.describe(path: device)
        #expect(volume.path == device)
        #expect(volume.name == String(device.dropFirst("/dev/".count)))
        #expect(volume.size == Int64(3 * MiB), "size via BLKGETSIZE64")
    }

    @Test(arguments: [
        ("directory", "volume.unsupported"),
        ("/dev/null", "volume.unsupported"),
        ("missing", "volume.not-found"),
        ("file/below", "volume.not-found"),
    ])
    func rejectsWhatIsNotAVolume(path: String, code: String) throws {
        let dir = try TemporaryDirectory(prefix: "lifeboat-volume")
        try FileTools.makeDirectory(dir.child("directory"))
        try FileTools.write(dir.child("file"), [1])
        let target = path.hasPrefix("/") ? path : dir.child(path)
        do {
            _ = try VolumeDiscovery.describe(path: target)
            Issue.record("\(target) is not a volume")
        } catch let error as LifeboatError {
            #expect(error.code == LifeboatError.Code(code))
            #expect(error.message.contains(target), "\(error.message)")
        }
    }
}
