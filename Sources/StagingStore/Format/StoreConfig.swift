import LifeboatCore

/// The `config` object: format version, store id, and the master-key slots holding the wrapped data keys.
///
/// Layout: `"LBSTORE1"`, u32 version, 16-byte store id, i64 created (ns), u32 block size, u32 segment size,
/// u32 segments per leaf, u32 fanout, u8 slot count, then per slot: u8 kind, data salt, u8 log2 N, u32 r,
/// u32 p, data wrapped. All integers little-endian; `data` is u32 length + bytes.
struct StoreConfig: Sendable, Equatable {
    static let magic = Array("LBSTORE1".utf8)

    var version: UInt32
    var storeID: [UInt8]
    var created: Int64
    var slots: [KeySlot]

    /// Associated data for wrapping keys: binds the slots to this store and version.
    var wrappingAssociatedData: [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u32(version)
        w.raw(storeID)
        return w.bytes
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u32(version)
        w.raw(storeID)
        w.i64(created)
        w.u32(UInt32(StoreFormat.blockSize))
        w.u32(UInt32(StoreFormat.segmentSize))
        w.u32(UInt32(StoreFormat.segmentsPerLeaf))
        w.u32(UInt32(StoreFormat.fanout))
        w.u8(UInt8(slots.count))
        for slot in slots {
            w.u8(slot.kind.rawValue)
            w.data(slot.salt)
            w.u8(slot.logN)
            w.u32(slot.r)
            w.u32(slot.p)
            w.data(slot.wrapped)
        }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], location: String) throws -> StoreConfig {
        guard bytes.count >= 8, Array(bytes[0..<8]) == magic else {
            throw LifeboatError(
                "store.not-a-store",
                "\(location) is not a Lifeboat store (no valid config): create one with 'lifeboat store init'"
            )
        }
        var r = ByteReader(bytes, what: "store config")
        _ = try r.raw(8)
        let version = try r.u32()
        guard version == StoreFormat.version else {
            throw LifeboatError(
                "store.version",
                "\(location) uses store format \(version); this lifeboat reads format \(StoreFormat.version)"
            )
        }
        let id = try r.raw(16)
        let created = try r.i64()
        let geometry = [try r.u32(), try r.u32(), try r.u32(), try r.u32()]
        guard
            geometry
                == [
                    UInt32(StoreFormat.blockSize), UInt32(StoreFormat.segmentSize),
                    UInt32(StoreFormat.segmentsPerLeaf), UInt32(StoreFormat.fanout),
                ]
        else {
            throw LifeboatError("store.config-corrupt", "\(location)/config has an unknown geometry \(geometry)")
        }
        let count = Int(try r.u8())
        var slots: [KeySlot] = []
        for _ in 0..<count {
            guard let kind = KeySlot.Kind(rawValue: try r.u8()) else {
                throw LifeboatError("store.config-corrupt", "\(location)/config has an unknown key slot kind")
            }
            let salt = try r.data()
            let logN = try r.u8()
            let rr = try r.u32()
            let p = try r.u32()
            let wrapped = try r.data()
            guard logN <= 22, rr <= 64, p <= 16 else {
                throw LifeboatError("store.config-corrupt", "\(location)/config has implausible scrypt parameters")
            }
            slots.append(KeySlot(kind: kind, salt: salt, logN: logN, r: rr, p: p, wrapped: wrapped))
        }
        try r.expectEnd()
        return StoreConfig(version: version, storeID: id, created: created, slots: slots)
    }
}
