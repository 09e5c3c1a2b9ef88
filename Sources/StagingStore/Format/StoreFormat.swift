/// Fixed parameters of on-disk format version 1 (docs/storage-format.md).
public enum StoreFormat {
    public static let version: UInt32 = 1
    /// Change granularity: volumes are tracked and deduplicated in 4 KiB blocks.
    public static let blockSize = 4096
    /// A segment is 16 blocks (64 KiB): the unit of fingerprints and of whole chunks.
    public static let blocksPerSegment = 16
    public static let segmentSize = blockSize * blocksPerSegment
    /// A leaf of the volume map describes 64 segments (4 MiB of the volume).
    public static let segmentsPerLeaf = 64
    public static let leafSpan = segmentSize * segmentsPerLeaf
    /// Inner nodes of the volume map have up to 64 children.
    public static let fanout = 64
    /// The largest volume the format supports (1 PiB; tree height 4).
    public static let maxVolumeSize: Int64 = 1 << 50
    /// Packs are closed once they reach this size.
    public static let packTargetSize = 32 << 20
    /// The most bytes one blob may have (a whole segment plus slack); larger lengths are corrupt.
    static let maxBlobLength = segmentSize * 4 + 4096

    /// How many volume bytes a subtree of the given height covers (height 0 is a leaf).
    static func span(height: Int) -> Int64 {
        var s = Int64(leafSpan)
        for _ in 0..<height { s *= Int64(fanout) }
        return s
    }

    /// The smallest tree height whose span covers `size` bytes.
    static func height(for size: Int64) -> Int {
        var h = 0
        while span(height: h) < size { h += 1 }
        return h
    }
}
