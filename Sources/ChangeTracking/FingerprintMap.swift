import Crypto
import LifeboatCore
import LifeboatSystem
import SystemPackage

/// The 16-byte fingerprint of a 4 KiB block, computed by the volume's `BlockFingerprinter`.
struct Fingerprint: Equatable, Sendable {
    var low: UInt64
    var high: UInt64

    static let blockSize = 4096
    static let byteCount = 16

    init(low: UInt64, high: UInt64) {
        self.low = low
        self.high = high
    }

    /// The first 16 bytes of a digest.
    init(digestPrefix digest: UnsafeRawBufferPointer) {
        low = digest.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        high = digest.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
    }
}

/// One fingerprint per 4 KiB block of a volume, in one allocation (16 bytes per block: 8 MiB for 2 GiB).
///
/// Slots are written by parallel workers, each slot by exactly one, hence `@unchecked Sendable`; the tracker
/// publishes a finished map under its lock.
final class FingerprintMap: @unchecked Sendable {
    let count: Int
    let slots: UnsafeMutableBufferPointer<Fingerprint>

    init(count: Int, filledWith initial: Fingerprint = Fingerprint(low: 0, high: 0)) {
        self.count = count
        slots = .allocate(capacity: max(count, 1))
        slots.initialize(repeating: initial)
    }

    deinit {
        slots.deallocate()
    }

    /// An independent copy.
    func copy() -> FingerprintMap {
        let other = FingerprintMap(count: count)
        _ = other.slots.update(fromContentsOf: slots)
        return other
    }

    subscript(index: Int) -> Fingerprint {
        get { slots[index] }
        set { slots[index] = newValue }
    }

    /// The slots as raw bytes, for reading and writing the map file (the in-memory layout is the digest bytes).
    var rawBytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(
            rebasing: UnsafeMutableRawBufferPointer(slots)[0..<(count * Fingerprint.byteCount)]
        )
    }
}

/// The file that keeps the acknowledged fingerprints of one volume: `<state dir>/<name>.fpmap`.
///
/// ```
/// offset size
///      0    8  magic "LBFPMAP\0"
///      8    4  format version (2), little endian like every integer here
///     12    4  block size (4096)
///     16    4  fingerprint size (16)
///     20    4  fingerprint function (`BlockFingerprinter.Function`: 0 SHA-256 prefix, 1 AES-256-GMAC)
///     24    8  volume size in bytes
///     32    8  number of blocks = ceil(volume size / block size)
///     40    8  acknowledged epoch (≥ 1)
///     48   16  first 16 bytes of SHA-256 of the volume identifier (a map of another volume is rejected)
///     64   32  the GMAC key (zeros for the SHA-256 prefix)
///     96   32  SHA-256 of bytes 0..<96 followed by every fingerprint
///    128   16 × number of blocks: the fingerprints, block 0 first
/// ```
///
/// Format 1 is the same with bytes 20..<24 and 64..<96 zero (SHA-256 prefixes); it is still read, and an upgraded
/// agent keeps that function for the volume. The checksum detects a torn or damaged file (anything else is
/// caught by the size and field checks); it is not a MAC: the state directory is trusted like the agent's binary,
/// and the file is written 0600 because it holds the key.
struct FingerprintMapFile {
    static let magic: [UInt8] = Array("LBFPMAP".utf8) + [0]
    static let version: UInt32 = 2
    static let keyOffset = 64
    static let headerSize = 128
    static let checksumOffset = 96

    struct Contents {
        var volumeSize: Int64
        var epoch: UInt64
        var map: FingerprintMap
        var fingerprinter: BlockFingerprinter
    }

    /// Why a map cannot be used: becomes `ChangeSet.Reason.rescan`.
    struct Unusable: Error {
        var why: String
    }

    static func volumeTag(_ volume: String) -> [UInt8] {
        var hasher = SHA256()
        Array(volume.utf8).withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return hasher.finalize().withUnsafeBytes { Array($0[0..<16]) }
    }

    static func header(
        volumeSize: Int64,
        blockCount: Int,
        epoch: UInt64,
        volume: String,
        fingerprinter: BlockFingerprinter
    ) -> [UInt8] {
        var h = [UInt8]()
        h.reserveCapacity(headerSize)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { h.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { h.append(contentsOf: $0) } }
        h += magic
        u32(version)
        u32(UInt32(Fingerprint.blockSize))
        u32(UInt32(Fingerprint.byteCount))
        u32(fingerprinter.function.rawValue)
        u64(UInt64(volumeSize))
        u64(UInt64(blockCount))
        u64(epoch)
        h += volumeTag(volume)
        h += fingerprinter.key
        h += [UInt8](repeating: 0, count: checksumOffset - h.count)
        return h
    }

    static func checksum(header: [UInt8], map: FingerprintMap) -> [UInt8] {
        var hasher = SHA256()
        header.withUnsafeBytes {
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<checksumOffset]))
        }
        hasher.update(bufferPointer: UnsafeRawBufferPointer(map.rawBytes))
        return hasher.finalize().withUnsafeBytes { Array($0) }
    }

    /// Writes the map atomically and durably (tmp, fsync, rename, fsync of the directory).
    static func write(_ contents: Contents, volume: String, to path: String) throws {
        var head = header(
            volumeSize: contents.volumeSize,
            blockCount: contents.map.count,
            epoch: contents.epoch,
            volume: volume,
            fingerprinter: contents.fingerprinter
        )
        head += checksum(header: head, map: contents.map)
        try SystemCalls.replaceAtomically(path) { fd, tmp in
            try head.withUnsafeBytes { try SystemCalls.pwriteFully(fd, $0, at: 0, path: tmp) }
            try SystemCalls.pwriteFully(
                fd,
                UnsafeRawBufferPointer(contents.map.rawBytes),
                at: Int64(headerSize),
                path: tmp
            )
        }
    }

    /// Reads and checks a map. nil: no map (first run). Throws `Unusable` with the reason when the file exists
    /// but cannot be trusted or read; never anything else.
    static func read(_ path: String, volume: String) throws(Unusable) -> Contents? {
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        } catch let e as Errno where e == .noSuchFileOrDirectory {
            return nil
        } catch {
            throw Unusable(why: "cannot open the fingerprint map \(path): \(error)")
        }
        defer { try? fd.close() }
        do {
            return try read(fd, path: path, volume: volume)
        } catch let e as Unusable {
            throw e
        } catch {
            throw Unusable(why: "cannot read the fingerprint map \(path): \(error)")
        }
    }

    private static func read(_ fd: FileDescriptor, path: String, volume: String) throws -> Contents {
        let fileSize = try SystemCalls.fileSize(of: fd, path: path)
        guard fileSize >= Int64(headerSize) else {
            throw Unusable(
                why: "the fingerprint map is truncated (\(fileSize) bytes, the header alone is \(headerSize))"
            )
        }
        var head = [UInt8](repeating: 0, count: headerSize)
        let got = try head.withUnsafeMutableBytes { try SystemCalls.preadFully(fd, into: $0, at: 0, path: path) }
        guard got == headerSize else { throw Unusable(why: "the fingerprint map is truncated while being read") }
        func u32(_ at: Int) -> UInt32 {
            head.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        }
        func u64(_ at: Int) -> UInt64 {
            head.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        }
        guard Array(head[0..<8]) == magic else { throw Unusable(why: "not a fingerprint map (bad magic)") }
        let format = u32(8)
        guard format == 1 || format == version else {
            throw Unusable(why: "fingerprint map format version \(u32(8)) is not supported")
        }
        guard u32(12) == UInt32(Fingerprint.blockSize), u32(16) == UInt32(Fingerprint.byteCount) else {
            throw Unusable(why: "fingerprint map has block size \(u32(12)) and fingerprint size \(u32(16))")
        }
        guard Array(head[48..<64]) == volumeTag(volume) else {
            throw Unusable(why: "the fingerprint map belongs to another volume")
        }
        let volumeSize = u64(24)
        let blockCount = u64(32)
        let epoch = u64(40)
        let bs = UInt64(Fingerprint.blockSize)
        guard volumeSize <= UInt64(Int64.max) / 2, blockCount == (volumeSize + bs - 1) / bs else {
            throw Unusable(
                why: "the fingerprint map's header is inconsistent (size \(volumeSize), \(blockCount) blocks)"
            )
        }
        let expected = Int64(headerSize) + Int64(blockCount) * Int64(Fingerprint.byteCount)
        guard fileSize == expected else {
            throw Unusable(
                why:
                    "the fingerprint map has \(fileSize) bytes where its header announces \(expected) "
                    + "(truncated or torn)"
            )
        }
        let map = FingerprintMap(count: Int(blockCount))
        let n = try SystemCalls.preadFully(fd, into: map.rawBytes, at: Int64(headerSize), path: path)
        guard n == map.rawBytes.count else { throw Unusable(why: "the fingerprint map shrank while being read") }
        guard checksum(header: head, map: map) == Array(head[checksumOffset..<headerSize]) else {
            throw Unusable(why: "the fingerprint map's checksum does not match (torn write or damage)")
        }
        guard epoch >= 1 else { throw Unusable(why: "the fingerprint map names epoch 0") }
        let fingerprinter: BlockFingerprinter
        switch format == 1 ? .sha256Prefix : BlockFingerprinter.Function(rawValue: u32(20)) {
        case .sha256Prefix?:
            fingerprinter = try BlockFingerprinter(function: .sha256Prefix, key: [])
        case .gmac?:
            fingerprinter = try BlockFingerprinter(
                function: .gmac,
                key: Array(head[keyOffset..<(keyOffset + BlockFingerprinter.keySize)])
            )
        case nil:
            throw Unusable(why: "the fingerprint map uses an unknown fingerprint function (\(u32(20)))")
        }
        return Contents(volumeSize: Int64(volumeSize), epoch: epoch, map: map, fingerprinter: fingerprinter)
    }
}

/// The highest epoch a tracker handed out, so that an epoch never names two change sets, even across a crash:
/// `<state dir>/<name>.epoch`, 48 bytes: magic "LBEPOCH\0", the epoch (u64 little endian), SHA-256 of both.
struct EpochFile {
    static let magic: [UInt8] = Array("LBEPOCH".utf8) + [0]

    static func encode(_ epoch: UInt64) -> [UInt8] {
        var bytes = magic
        withUnsafeBytes(of: epoch.littleEndian) { bytes.append(contentsOf: $0) }
        var hasher = SHA256()
        bytes.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        bytes += hasher.finalize().withUnsafeBytes { Array($0) }
        return bytes
    }

    /// The epoch in the file; nil when it is missing or unusable (the caller falls back to the map's epoch).
    static func read(_ path: String) -> UInt64? {
        guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) else { return nil }
        defer { try? fd.close() }
        var bytes = [UInt8](repeating: 0, count: 49)
        guard
            let n = try? bytes.withUnsafeMutableBytes({ try SystemCalls.preadFully(fd, into: $0, at: 0, path: path) }),
            n == 48
        else { return nil }
        let epoch = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
        guard Array(bytes[0..<48]) == encode(epoch) else { return nil }
        return epoch
    }

    static func write(_ epoch: UInt64, to path: String) throws {
        let bytes = encode(epoch)
        try SystemCalls.replaceAtomically(path) { fd, tmp in
            try bytes.withUnsafeBytes { try SystemCalls.pwriteFully(fd, $0, at: 0, path: tmp) }
        }
    }
}
