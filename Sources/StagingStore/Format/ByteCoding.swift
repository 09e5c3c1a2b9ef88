import LifeboatCore

/// Little-endian encoder for the store's binary formats (see docs/storage-format.md).
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func id(_ v: BlobID) {
        for w in [v.w0, v.w1, v.w2, v.w3] { withUnsafeBytes(of: w.bigEndian) { bytes.append(contentsOf: $0) } }
    }
    mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
    /// A length-prefixed (u16) UTF-8 string.
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    /// A length-prefixed (u32) byte string.
    mutating func data(_ v: [UInt8]) {
        u32(UInt32(v.count))
        bytes.append(contentsOf: v)
    }
}

/// Decoder matching `ByteWriter`; every read checks bounds and throws `store.corrupt` on truncation.
struct ByteReader {
    let bytes: [UInt8]
    var offset: Int = 0
    let what: String

    init(_ bytes: [UInt8], what: String) {
        self.bytes = bytes
        self.what = what
    }

    var remaining: Int { bytes.count - offset }
    var isAtEnd: Bool { offset == bytes.count }

    private mutating func take(_ n: Int) throws -> Range<Int> {
        guard n >= 0, remaining >= n else {
            throw LifeboatError("store.corrupt", "\(what) is truncated or malformed at byte \(offset)")
        }
        defer { offset += n }
        return offset..<(offset + n)
    }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let r = try take(MemoryLayout<T>.size)
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: r.lowerBound, as: T.self)) }
    }

    mutating func u8() throws -> UInt8 { bytes[try take(1).lowerBound] }
    mutating func u16() throws -> UInt16 { try load(UInt16.self) }
    mutating func u32() throws -> UInt32 { try load(UInt32.self) }
    mutating func u64() throws -> UInt64 { try load(UInt64.self) }
    mutating func i64() throws -> Int64 { Int64(bitPattern: try load(UInt64.self)) }
    mutating func id() throws -> BlobID {
        let r = try take(32)
        return bytes.withUnsafeBytes { BlobID(bytes: UnsafeRawBufferPointer(rebasing: $0[r])) }
    }
    mutating func raw(_ n: Int) throws -> [UInt8] { Array(bytes[try take(n)]) }
    mutating func string() throws -> String {
        let n = Int(try u16())
        return String(decoding: bytes[try take(n)], as: UTF8.self)
    }
    mutating func data() throws -> [UInt8] {
        let n = Int(try u32())
        return Array(bytes[try take(n)])
    }

    func expectEnd() throws {
        guard isAtEnd else {
            throw LifeboatError("store.corrupt", "\(what) has \(remaining) unexpected trailing bytes")
        }
    }
}
