import ChangeTracking
import Crypto
import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

let block = 4096

/// A volume image and a tracker state directory in one temporary directory.
final class TrackerFixture {
    let dir: TemporaryDirectory
    let volumePath: String
    let stateDir: String
    let volumeID: String

    init(size: Int, seed: UInt64 = 1, volumeID: String = "vm-1:sda") throws {
        dir = try TemporaryDirectory(prefix: "lifeboat-ct")
        volumePath = dir.child("disk.img")
        stateDir = dir.child("state")
        self.volumeID = volumeID
        try FileTools.write(volumePath, TestImage.mixed(size: size, seed: seed))
    }

    func tracker(_ options: ScanTracker.Options = .init(), path: String? = nil) throws -> ScanTracker {
        try ScanTracker(volume: volumeID, path: path ?? volumePath, stateDirectory: stateDir, options: options)
    }

    func contents() throws -> [UInt8] { try FileTools.read(volumePath) }

    /// Runs a first tracker through its initial sync (collect, read, acknowledge) and lets it go (its lock with
    /// it); returns the path of the map it left.
    func acknowledgedInitialSync() throws -> String {
        let t = try tracker()
        try collectReadAndAcknowledge(t)
        return t.mapPath
    }

    /// Attaches the image to a free loop device (the suite runs as root) and returns the device's path; the
    /// caller detaches it (`losetup -d`).
    func attachLoopDevice() throws -> String {
        let attach = try run("/usr/sbin/losetup", ["--find", "--show", volumePath])
        try #require(
            attach.status == 0,
            "losetup --find --show \(volumePath) failed (status \(attach.status)): \(attach.stderr)"
        )
        let device = attach.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(device.hasPrefix("/dev/loop"), "losetup printed '\(attach.stdout)'")
        return device
    }

    /// Overwrites block `index` with random bytes (never equal to what was there).
    func scribble(block index: Int, rng: inout SeededRandom) throws {
        try FileTools.write(volumePath, rng.bytes(block), at: Int64(index * block))
    }
}

/// Coalesced extents of a set of 4 KiB blocks (written independently of the tracker's own coalescing).
func extents(ofBlocks blocks: some Sequence<Int>, volumeSize: Int) -> [ChangedExtent] {
    var out: [ChangedExtent] = []
    for b in Set(blocks).sorted() {
        let start = Int64(b * block)
        let end = min(Int64((b + 1) * block), Int64(volumeSize))
        if let last = out.last, last.end == start {
            out[out.count - 1].length += end - start
        } else {
            out.append(ChangedExtent(offset: start, length: end - start))
        }
    }
    return out
}

/// The indexes of the blocks of `bytes` that are not all zero (a last partial block counts).
func nonZeroBlocks(_ bytes: [UInt8]) -> [Int] {
    var out: [Int] = []
    var start = 0
    while start < bytes.count {
        let end = min(start + block, bytes.count)
        if bytes[start..<end].contains(where: { $0 != 0 }) { out.append(start / block) }
        start = end
    }
    return out
}

/// Bytes per read of `readAll`: the agent's `AgentOptions.pieceBytes` (1 MiB).
let agentPieceBytes = 1 * MiB

/// Reads every extent of `set` through the tracker the way the agent sends it: extent after extent, in pieces
/// of at most `agentPieceBytes` (4 KiB aligned; the piece holding a partial last block ends at the volume
/// size), each into a buffer of exactly its length. Returns the bytes read, the extents' bytes one after
/// another.
///
/// Call it before `acknowledge(epoch:)` wherever the receiver is meant to have got the whole change set: a
/// tracker acknowledges what was read, and blocks of the extents that were never read stay changed.
@discardableResult
func readAll(_ tracker: any ChangeTracker, _ set: ChangeSet) throws -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(Int(set.changedBytes))
    for extent in set.extents {
        var offset = extent.offset
        while offset < extent.end {
            let piece = ChangedExtent(offset: offset, length: min(Int64(agentPieceBytes), extent.end - offset))
            var buffer = [UInt8](repeating: 0, count: Int(piece.length))
            try buffer.withUnsafeMutableBytes { try tracker.read(piece, epoch: set.epoch, into: $0) }
            out += buffer
            offset = piece.end
        }
    }
    return out
}

/// `collect()`, then every extent read (`readAll`) and the epoch acknowledged: the receiver got the change set.
@discardableResult
func collectReadAndAcknowledge(_ tracker: ScanTracker) throws -> ChangeSet {
    let set = try tracker.collect()
    try readAll(tracker, set)
    try tracker.acknowledge(epoch: set.epoch)
    return set
}

/// The bytes of `contents` inside `extents`, one extent after another (what `readAll` returns for them).
func extentBytes(_ contents: [UInt8], in extents: [ChangedExtent]) -> [UInt8] {
    extents.flatMap { contents[Int($0.offset)..<Int($0.end)] }
}

/// Runs an executable, returns (status, stdout, stderr).
@discardableResult
func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let r = try Processes.run(executable, arguments)
    return (r.status, r.stdout, r.stderr)
}

/// A receiver that builds each epoch from the state it acknowledged as the change set's base, reading the
/// extents through the tracker: what a replication server does, in memory.
final class ModelReceiver {
    /// States by epoch; epoch 0 is the empty volume.
    private(set) var states: [UInt64: [UInt8]] = [0: []]

    /// Applies a change set, reading its extents through the tracker; returns the new state.
    @discardableResult
    func apply(_ set: ChangeSet, from tracker: any ChangeTracker) throws -> [UInt8] {
        let base = try #require(states[set.baseEpoch], "receiver has no state for base epoch \(set.baseEpoch)")
        var state = base
        if state.count < Int(set.volumeSize) {
            state += [UInt8](repeating: 0, count: Int(set.volumeSize) - state.count)
        }
        for extent in set.extents {
            var buffer = [UInt8](repeating: 0, count: Int(extent.length))
            try buffer.withUnsafeMutableBytes { try tracker.read(extent, epoch: set.epoch, into: $0) }
            state.replaceSubrange(Int(extent.offset)..<Int(extent.end), with: buffer)
        }
        states[set.epoch] = state
        return state
    }
}

/// The code of the `LifeboatError` `body` throws, or nil if it does not throw.
func thrownCode(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch let e as LifeboatError {
        return e.code.rawValue
    } catch {
        return "not a LifeboatError: \(error)"
    }
}

/// What a fingerprint map file must hold after its 128-byte header for a volume of `bytes`, computed here with
/// swift-crypto's AES-GCM (not the tracker's code): AES-256-GMAC under the key the header records (bytes
/// 64..<96; function 1 at byte 20, format 2 at byte 8), nonce zero, of each 4 KiB block padded with zeros.
func expectedFingerprints(of bytes: [UInt8], mapFile: [UInt8]) throws -> [UInt8] {
    func u32(_ at: Int) -> UInt32 {
        mapFile.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
    }
    try #require(mapFile.count >= 128 && u32(8) == 2 && u32(20) == 1, "a format 2 map of AES-256-GMAC fingerprints")
    let key = SymmetricKey(data: mapFile[64..<96])
    let nonce = try AES.GCM.Nonce(data: [UInt8](repeating: 0, count: 12))
    var out: [UInt8] = []
    var offset = 0
    while offset < bytes.count {
        var blockBytes = Array(bytes[offset..<min(offset + block, bytes.count)])
        blockBytes += [UInt8](repeating: 0, count: block - blockBytes.count)
        out += try AES.GCM.seal([UInt8](), using: key, nonce: nonce, authenticating: blockBytes).tag
        offset += block
    }
    return out
}
