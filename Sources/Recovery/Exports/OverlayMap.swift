/// Where each 4 KiB block of an overlaid volume reads from, and its file format.
///
/// Format (little-endian): `"LBOVMAP1"`, `u32 blockSize`, `u32 0`, `u64 volumeSize`, `u64 blockCount`, the
/// "in overlay" bitset and the "zero" bitset (each `ceil(blockCount / 64)` `u64` words, bit `b % 64` of word
/// `b / 64`), then a CRC-32 (IEEE) of everything before it. A block in the overlay reads from the data file,
/// unless its zero bit is set (then it reads as zeroes); any other block reads from the base.
struct OverlayMap: Sendable {
    enum State: Sendable, Equatable {
        case base
        case data
        case zero
    }

    static let blockSize = 4096
    static let magic = Array("LBOVMAP1".utf8)
    static let headerSize = 32

    let volumeSize: Int64
    let blockCount: Int
    private var inOverlay: [UInt64]
    private var zeroed: [UInt64]

    init(volumeSize: Int64) {
        self.volumeSize = volumeSize
        blockCount = Int((volumeSize + Int64(Self.blockSize) - 1) / Int64(Self.blockSize))
        inOverlay = [UInt64](repeating: 0, count: (blockCount + 63) / 64)
        zeroed = inOverlay
    }

    subscript(block: Int) -> State {
        get {
            let bit = UInt64(1) << UInt64(block % 64)
            guard inOverlay[block / 64] & bit != 0 else { return .base }
            return zeroed[block / 64] & bit != 0 ? .zero : .data
        }
        set {
            let bit = UInt64(1) << UInt64(block % 64)
            let w = block / 64
            switch newValue {
            case .base:
                inOverlay[w] &= ~bit
                zeroed[w] &= ~bit
            case .data:
                inOverlay[w] |= bit
                zeroed[w] &= ~bit
            case .zero:
                inOverlay[w] |= bit
                zeroed[w] |= bit
            }
        }
    }

    var changedBlocks: Int { inOverlay.reduce(0) { $0 + $1.nonzeroBitCount } }

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.headerSize + 16 * inOverlay.count + 4)
        out += Self.magic
        append(UInt32(Self.blockSize), to: &out)
        append(UInt32(0), to: &out)
        append(UInt64(volumeSize), to: &out)
        append(UInt64(blockCount), to: &out)
        for w in inOverlay { append(w, to: &out) }
        for w in zeroed { append(w, to: &out) }
        append(CRC32.checksum(out), to: &out)
        return out
    }

    init(decoding bytes: [UInt8], volumeSize: Int64) throws(OverlayMapError) {
        self.init(volumeSize: volumeSize)
        let words = inOverlay.count
        let expected = Self.headerSize + 16 * words + 4
        guard bytes.count == expected else {
            throw OverlayMapError("\(bytes.count) bytes, expected \(expected) for a volume of \(volumeSize) bytes")
        }
        guard CRC32.checksum(bytes[..<(bytes.count - 4)]) == Self.read(UInt32.self, bytes, at: bytes.count - 4) else {
            throw OverlayMapError("checksum mismatch")
        }
        guard Array(bytes[0..<8]) == Self.magic else { throw OverlayMapError("not an overlay map") }
        guard Self.read(UInt32.self, bytes, at: 8) == UInt32(Self.blockSize) else { throw OverlayMapError("other block size") }
        guard Self.read(UInt64.self, bytes, at: 16) == UInt64(volumeSize) else {
            throw OverlayMapError(
                "made for a volume of \(Self.read(UInt64.self, bytes, at: 16)) bytes, the base has \(volumeSize)"
            )
        }
        guard Self.read(UInt64.self, bytes, at: 24) == UInt64(blockCount) else { throw OverlayMapError("wrong block count") }
        for i in 0..<words {
            inOverlay[i] = Self.read(UInt64.self, bytes, at: Self.headerSize + 8 * i)
            zeroed[i] = Self.read(UInt64.self, bytes, at: Self.headerSize + 8 * (words + i))
        }
    }

    private func append<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        var v = value.littleEndian
        withUnsafeBytes(of: &v) { out += $0 }
    }

    private static func read<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], at offset: Int) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(bytes[offset + i]) << (8 * i) }
        return v
    }
}

struct OverlayMapError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
