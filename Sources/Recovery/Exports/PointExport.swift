public import StagingStore

/// A volume at a recovery point, read-only, straight from the staging store: nothing is copied, every byte is
/// authenticated as it is read, and block status reports the store's hole segments as holes.
public final class PointExport: NBDExport {
    public let name: String
    public let reader: VolumeReader

    public init(name: String, reader: VolumeReader) {
        self.name = name
        self.reader = reader
    }

    /// Opens `volume` of `machine` at `point` in `store`.
    public convenience init(name: String, store: Store, machine: String, volume: String, point: String) throws {
        self.init(name: name, reader: try store.reader(machine: machine, volume: volume, point: point))
    }

    public var size: Int64 { reader.size }
    public var isReadOnly: Bool { true }

    public func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try reader.read(at: offset, into: buffer)
    }

    public func write(at offset: Int64, from bytes: UnsafeRawBufferPointer) throws { throw readOnlyError() }
    public func writeZeroes(at offset: Int64, length: Int64) throws { throw readOnlyError() }
    public func trim(at offset: Int64, length: Int64) throws { throw readOnlyError() }
    public func flush() throws {}

    /// Segment by segment (64 KiB): holes are `HOLE|ZERO`, everything else data. Runs of equal state merge.
    public func blockStatus(at offset: Int64, length: Int64) throws -> [NBDExtent] {
        let segment = Int64(StoreFormat.segmentSize)
        let end = min(size, offset + length)
        var extents: [NBDExtent] = []
        var position = offset
        while position < end {
            let index = Int(position / segment)
            let next = min(end, Int64(index + 1) * segment)
            let flags = try reader.isHole(segment: index) ? NBD.Allocation.hole | NBD.Allocation.zero : 0
            let count = UInt32(next - position)
            if let last = extents.last, last.flags == flags, UInt64(last.length) + UInt64(count) <= UInt64(UInt32.max) {
                extents[extents.count - 1].length += count
            } else {
                extents.append(NBDExtent(length: count, flags: flags))
            }
            position = next
        }
        return extents
    }
}
