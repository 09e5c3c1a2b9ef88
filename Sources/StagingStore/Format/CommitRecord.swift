public import LifeboatCore

/// The identity of a commit (and of the recovery point it becomes): 8 random bytes, shown as 16 hex digits.
public struct PointID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let raw: UInt64

    public init(raw: UInt64) { self.raw = raw }

    public init?(_ text: String) {
        guard text.utf8.count == 16, let v = UInt64(text, radix: 16) else { return nil }
        raw = v
    }

    static func random() -> PointID {
        var g = SystemRandomNumberGenerator()
        return PointID(raw: g.next() | 1)
    }

    public var description: String {
        let s = String(raw, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    public static func < (a: PointID, b: PointID) -> Bool { a.raw < b.raw }
}

/// One volume's state in a commit: its size and the root of its map.
public struct VolumeState: Sendable, Equatable {
    public var name: String
    public var size: Int64
    var height: Int
    var root: BlobID?
    /// The sender's name for this state of the volume (a change tracker's epoch), so that a later change set
    /// can name the state it applies to; 0 when none (ingest, or an older record).
    public var sourceEpoch: UInt64 = 0
}

/// A commit: all volumes of one machine at one instant. Stored as `commits/<point id>`, sealed with kind
/// commit and context = the file name. Layout: `"LBCOMMIT"`, u8 version (2; 1 is read too), u64 id,
/// string machine, u64 sequence, i64 time (ns), u64 parent id (0 = none), u16 volume count, per volume string
/// name, u64 size, u8 height, u8 has-root, [32-byte root], u64 source epoch (version 2 only), then u64 changed
/// bytes, u64 stored bytes, then (version 2 only) u8 flags: bit 0 set = not crash-consistent.
public struct CommitRecord: Sendable, Equatable {
    public var id: PointID
    public var machine: String
    /// Per machine, increases by one with every commit; orders commits with the same time.
    public var sequence: UInt64
    public var time: Timestamp
    public var parent: PointID?
    public var volumes: [VolumeState]
    /// Bytes of the volumes that differ from the parent commit.
    public var changedBytes: UInt64
    /// Bytes this commit added to the store (after deduplication, compression and encryption).
    public var storedBytes: UInt64
    /// Whether the commit holds all volumes as of one instant (a frozen capture, or an ingest of images nobody
    /// writes). A commit that is not is kept — later commits build on it — but never offered as a recovery
    /// point by `latest` or a time (DESIGN.md §5.2); only its id reaches it.
    public var crashConsistent: Bool = true

    static let magic = Array("LBCOMMIT".utf8)

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u8(2)
        w.u64(id.raw)
        w.string(machine)
        w.u64(sequence)
        w.i64(time.nanoseconds)
        w.u64(parent?.raw ?? 0)
        w.u16(UInt16(volumes.count))
        for v in volumes {
            w.string(v.name)
            w.u64(UInt64(v.size))
            w.u8(UInt8(v.height))
            if let root = v.root {
                w.u8(1)
                w.id(root)
            } else {
                w.u8(0)
            }
            w.u64(v.sourceEpoch)
        }
        w.u64(changedBytes)
        w.u64(storedBytes)
        w.u8(crashConsistent ? 0 : 1)
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], name: String) throws -> CommitRecord {
        var r = ByteReader(bytes, what: "commit \(name)")
        guard try r.raw(8) == magic else { throw LifeboatError("store.corrupt", "commit \(name) has a bad header") }
        let version = try r.u8()
        guard version == 1 || version == 2 else {
            throw LifeboatError("store.corrupt", "commit \(name) has an unknown version \(version)")
        }
        let id = PointID(raw: try r.u64())
        guard id.description == name else {
            throw LifeboatError("store.corrupt", "commit \(name) holds the record of \(id)")
        }
        let machine = try r.string()
        let sequence = try r.u64()
        let time = Timestamp(nanoseconds: try r.i64())
        let parentRaw = try r.u64()
        let count = Int(try r.u16())
        var volumes: [VolumeState] = []
        for _ in 0..<count {
            let vname = try r.string()
            let size = Int64(bitPattern: try r.u64())
            let height = Int(try r.u8())
            let root: BlobID? = try r.u8() == 1 ? try r.id() : nil
            let sourceEpoch = version >= 2 ? try r.u64() : 0
            guard size >= 0, height <= 12 else {
                throw LifeboatError("store.corrupt", "commit \(name) has an implausible volume \(vname)")
            }
            volumes.append(VolumeState(name: vname, size: size, height: height, root: root, sourceEpoch: sourceEpoch))
        }
        let changed = try r.u64()
        let stored = try r.u64()
        let flags: UInt8 = version >= 2 ? try r.u8() : 0
        guard flags <= 1 else { throw LifeboatError("store.corrupt", "commit \(name) has unknown flags \(flags)") }
        try r.expectEnd()
        return CommitRecord(
            id: id,
            machine: machine,
            sequence: sequence,
            time: time,
            parent: parentRaw == 0 ? nil : PointID(raw: parentRaw),
            volumes: volumes,
            changedBytes: changed,
            storedBytes: stored,
            crashConsistent: flags & 1 == 0
        )
    }
}

/// A pin keeps a point from retention: `pins/<random>`, sealed with kind pin. Layout: u64 point id,
/// string holder, i64 time.
public struct Pin: Sendable, Equatable {
    public var name: String
    public var point: PointID
    public var holder: String
    public var since: Timestamp

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.u64(point.raw)
        w.string(holder)
        w.i64(since.nanoseconds)
        return w.bytes
    }

    static func decode(_ bytes: [UInt8], name: String) throws -> Pin {
        var r = ByteReader(bytes, what: "pin \(name)")
        let p = Pin(name: name, point: PointID(raw: try r.u64()), holder: try r.string(), since: Timestamp(nanoseconds: try r.i64()))
        try r.expectEnd()
        return p
    }
}
