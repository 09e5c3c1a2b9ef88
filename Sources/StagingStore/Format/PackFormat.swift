import LifeboatCore

/// Where a blob lives and how to turn its stored bytes back into plaintext.
struct BlobLocation: Sendable, Equatable {
    var pack: UInt32
    var offset: UInt32
    var length: UInt32
    var rawLength: UInt32
    var compressed: Bool
    var kind: BlobKind
    /// Stored plain as it arrived, to be compressed later (`Store.compressDeferred`).
    var deferred: Bool = false
}

/// One entry of a pack directory or an index file.
struct BlobEntry: Sendable, Equatable {
    var id: BlobID
    var kind: BlobKind
    var offset: UInt32
    var length: UInt32
    var rawLength: UInt32
    var compressed: Bool
    /// Stored plain as it arrived, to be compressed later (`Store.compressDeferred`); never with `compressed`.
    var deferred: Bool = false

    static let encodedSize = 1 + 32 + 4 + 4 + 4 + 1

    func encode(into w: inout ByteWriter) {
        w.u8(kind.rawValue)
        w.id(id)
        w.u32(offset)
        w.u32(length)
        w.u32(rawLength)
        // The body's coding: 0 plain, 1 zstd, 2 plain until compressed in the background (read as plain).
        w.u8(compressed ? 1 : deferred ? 2 : 0)
    }

    static func decode(from r: inout ByteReader) throws -> BlobEntry {
        let kindByte = try r.u8()
        guard let kind = BlobKind(rawValue: kindByte), kind == .chunk || kind == .node else {
            throw LifeboatError("store.corrupt", "\(r.what) names an unknown blob kind \(kindByte)")
        }
        let id = try r.id()
        let offset = try r.u32()
        let length = try r.u32()
        let raw = try r.u32()
        let flag = try r.u8()
        guard flag <= 2, length >= UInt32(BlobCipher.overhead), length <= StoreFormat.maxBlobLength,
            raw <= StoreFormat.maxBlobLength
        else {
            throw LifeboatError("store.corrupt", "\(r.what) has an implausible entry for blob \(id.short)")
        }
        return BlobEntry(id: id, kind: kind, offset: offset, length: length, rawLength: raw, compressed: flag == 1, deferred: flag == 2)
    }
}

/// Pack files: `"LBPACK01"`, sealed blobs back to back, the sealed pack directory (kind packDirectory,
/// context = pack name; its plaintext is one zstd frame of the entry list), u32 directory length, `"LBPKEND1"`.
enum PackFormat {
    static let header = Array("LBPACK01".utf8)
    static let footerMagic = Array("LBPKEND1".utf8)
    static let footerSize = 12

    static func encodeDirectory(_ entries: [BlobEntry]) -> [UInt8] {
        var w = ByteWriter(capacity: 4 + entries.count * BlobEntry.encodedSize)
        w.u32(UInt32(entries.count))
        for e in entries { e.encode(into: &w) }
        return Zstd.compress(w.bytes)
    }

    static func decodeDirectory(_ compressed: [UInt8], pack: String) throws -> [BlobEntry] {
        let bytes = try Zstd.decompress(compressed, limit: 64 << 20, what: "directory of pack \(pack)")
        var r = ByteReader(bytes, what: "directory of pack \(pack)")
        let n = Int(try r.u32())
        guard n <= bytes.count / BlobEntry.encodedSize else {
            throw LifeboatError("store.corrupt", "directory of pack \(pack) claims \(n) entries")
        }
        var entries: [BlobEntry] = []
        entries.reserveCapacity(n)
        for _ in 0..<n { entries.append(try BlobEntry.decode(from: &r)) }
        try r.expectEnd()
        return entries
    }
}

/// Index files: sealed (kind indexFile, context = file name) zstd frame of `"LBINDEX1"`, u32 pack count, then per pack
/// its 16-byte name, u32 entry count and the entries.
enum IndexFormat {
    static let magic = Array("LBINDEX1".utf8)

    static func encode(_ packs: [(name: [UInt8], entries: [BlobEntry])]) -> [UInt8] {
        var w = ByteWriter(capacity: 16 + packs.reduce(0) { $0 + 20 + $1.entries.count * BlobEntry.encodedSize })
        w.raw(magic)
        w.u32(UInt32(packs.count))
        for pack in packs {
            w.raw(pack.name)
            w.u32(UInt32(pack.entries.count))
            for e in pack.entries { e.encode(into: &w) }
        }
        return Zstd.compress(w.bytes)
    }

    static func decode(_ compressed: [UInt8], name: String) throws -> [(name: [UInt8], entries: [BlobEntry])] {
        let bytes = try Zstd.decompress(compressed, limit: 4 << 30, what: "index file \(name)")
        var r = ByteReader(bytes, what: "index file \(name)")
        guard try r.raw(8) == magic else {
            throw LifeboatError("store.corrupt", "index file \(name) has a bad magic")
        }
        let packCount = Int(try r.u32())
        var out: [(name: [UInt8], entries: [BlobEntry])] = []
        for _ in 0..<packCount {
            let packName = try r.raw(16)
            let n = Int(try r.u32())
            guard n <= r.remaining / BlobEntry.encodedSize else {
                throw LifeboatError("store.corrupt", "index file \(name) claims \(n) entries")
            }
            var entries: [BlobEntry] = []
            entries.reserveCapacity(n)
            for _ in 0..<n { entries.append(try BlobEntry.decode(from: &r)) }
            out.append((packName, entries))
        }
        try r.expectEnd()
        return out
    }
}
