import LifeboatCore

/// A volume the agent protects: the name the server knows it by and the image file or block device to read.
public struct AgentVolume: Sendable, Equatable {
    public var name: String
    public var path: String

    public init(name: String, path: String) {
        self.name = name
        self.path = path
    }

    /// `NAME=PATH`, or a path whose last component becomes the name (`/dev/sda` → `sda`).
    public init(parsing text: String) throws {
        if let eq = text.firstIndex(of: "="), !text.hasPrefix("/") {
            name = String(text[..<eq])
            path = String(text[text.index(after: eq)...])
        } else {
            path = text
            name = String(text.split(separator: "/").last ?? Substring(text))
        }
        try Names.validate(name, kind: "volume")
        guard path.hasPrefix("/") else {
            throw LifeboatError("volume.bad-path", "volume path '\(path)' must be absolute")
        }
    }
}

/// How the agent replicates. Defaults suit a server; tests shorten the intervals.
public struct AgentOptions: Sendable {
    public var volumes: [AgentVolume]
    /// Run one cycle to an acknowledged, consistent commit and stop.
    public var once: Bool = false
    /// The shortest time between the starts of two cycles.
    public var cycleInterval: Duration = .seconds(1)
    /// Commit even when nothing changed after this long, so that lag stays meaningful on an idle machine.
    public var heartbeatInterval: Duration = .seconds(10)
    /// Unfrozen rounds continue while a round found more than this; then the residue is captured frozen.
    public var residueThresholdBytes: Int64 = 16 << 20
    public var maxUnfrozenRounds: Int = 3
    /// Freeze attempts per cycle before the commit is sent as not crash-consistent.
    public var freezeAttempts: Int = 2
    /// A frozen residue larger than this is not read (it could not be read in time): the attempt fails.
    public var maxFrozenResidueBytes: Int64 = 256 << 20
    /// An initial sync (or rescan) with more data than this lands in commits of about this much, each durable
    /// on its own: an interrupted one resumes after the last part instead of starting over.
    public var initialSyncPartBytes: Int64 = 4 << 30
    /// Bytes per EXTENT frame (at most 4 MiB).
    public var pieceBytes: Int = 1 << 20
    /// Whether pieces travel compressed (zstd level 1, one frame per 64 KiB segment piece, EXTENT encoding 2,
    /// which the server stores as is) or raw (the server stores them plain and compresses them in the
    /// background). `auto` measures both and sends the way that delivers more bytes per second.
    public var compression: WireCompression = .auto
    /// Local overrides of the server's settings (nil: as the server says).
    public var throttleMbps: UInt32?
    public var maxFreezeMilliseconds: UInt32?
    /// Reconnect delays grow from the first to the last.
    public var reconnectDelays: [Duration] = [.milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30)]
    /// Threads for reading and hashing during a scan.
    public var scanThreads: Int = 2
    /// How changes are found (see `TrackerChoice`).
    public var tracker: TrackerChoice = .auto

    public init(volumes: [AgentVolume]) {
        self.volumes = volumes
    }
}

/// How the agent finds changed blocks.
public enum TrackerChoice: String, Sendable, CaseIterable {
    /// Kernel write hints (eBPF through bpftrace) for block devices when available, scanning otherwise.
    case auto
    /// Always read and fingerprint the whole volume.
    case scan
    /// Kernel write hints for every block device, or fail.
    case kernel
}

/// How the agent sends changed bytes: see `AgentOptions.compression`.
public enum WireCompression: String, Sendable, CaseIterable {
    case auto, always, never
}
