import ChangeTracking
import LifeboatCore
import Logging
import NIOCore
import NIOPosix
import ReplicationProtocol
import ReplicationTransport

/// Progress of the commit being sent, for STATUS frames.
struct SendProgress {
    var total: Int64 = 0
    var sent: Int64 = 0
    /// Bytes of an initial sync made durable by earlier parts (they count as synced and in the total).
    var earlier: Int64 = 0
    var lastReport = ContinuousClock.now
}

/// A residue captured while frozen: the change sets and the bytes of their extents, read before the thaw.
struct FrozenCapture: @unchecked Sendable {
    var sets: [ChangeSet]
    var data: [[[UInt8]]]
    var time: Timestamp
    var frozenFor: Duration
}

extension ReplicationAgent {
    /// One capture cycle: rounds of changes while the machine runs, then the residue while its filesystems are
    /// frozen, all in one commit; waits for the server's answer and lets the trackers forget only on success.
    func cycle(sequence: UInt64, channel: SessionChannel, commitEvenIfUnchanged: Bool) async throws -> CycleOutcome {
        var created: [[UInt64]] = []  // epochs made this cycle, per round
        let firstCollectTime = Timestamp.now()
        let collected = try await collect(since: nil)
        created.append(collected.map(\.epoch))
        let earlierParts = InitialSyncProgress.load(state)
        // An initial sync (or rescan) larger than a part lands in parts: an interruption loses one part at most.
        let inParts = earlierParts != nil || collected.contains { $0.reason != .incremental }
        let (first, remaining) = inParts ? Self.part(of: collected, limit: options.initialSyncPartBytes) : (collected, 0)
        let changed = first.reduce(Int64(0)) { $0 + $1.changedBytes }
        let sizes = first.map(\.volumeSize)
        let fresh = first.contains { $0.reason != .incremental } || earlierParts != nil
        let stalled = status.current.state == .stalled
        if changed == 0 && !fresh && !commitEvenIfUnchanged && sizes == lastSizes.value {
            abandon(created)
            if !stalled { status.set(.continuous) }
            try await report(channel, SendProgress())
            return CycleOutcome(kind: .unchanged, sequence: sequence, changedBytes: 0)
        }

        if first.contains(where: { if case .rescan = $0.reason { true } else { false } }) {
            status.set(.rescan, reason: first.compactMap { if case .rescan(let why) = $0.reason { why } else { nil } }.first)
        } else if let earlierParts, earlierParts.rescan {
            status.set(.rescan, reason: "continuing after \(earlierParts.parts) committed part(s)")
        } else if first.contains(where: { $0.reason == .initialSync }) || earlierParts != nil {
            status.set(.initialSync)
        } else if !stalled {
            // STALLED (and its reason) stays until a commit lands.
            status.set(changed > Self.backlogThreshold ? .backlog : .continuous)
        }
        let volumes = zip(trackers, first).map { entry, set in
            VolumeInfo(name: entry.volume.name, size: set.volumeSize, baseEpoch: set.baseEpoch)
        }
        try await channel.perform(channel.machine.beginCommit(sequence: sequence, volumes: volumes))
        let earlier = earlierParts?.committedBytes ?? 0
        var progress = SendProgress(total: changed + remaining, earlier: earlier)
        try await report(channel, progress)
        try await send(first, channel: channel, progress: &progress, skipZeros: true)
        if remaining > 0 {
            return try await commitPart(
                first,
                sequence: sequence,
                channel: channel,
                progress: progress,
                after: earlierParts,
                remaining: remaining,
                created: created
            )
        }

        // Unfrozen rounds while the residue is large. With no mounted filesystem to freeze (image files, raw
        // disks), more rounds and a residue would only repeat the scan: the first round is the capture.
        let nothingToFreeze = freezer.mountPoints.isEmpty
        var current = first
        var lastRound = changed
        var rounds = 1
        var why: String?
        while !nothingToFreeze && rounds < options.maxUnfrozenRounds && lastRound > options.residueThresholdBytes {
            let next = try await collect(since: current)
            created.append(next.map(\.epoch))
            guard next.map(\.volumeSize) == sizes else {
                why = "a volume grew during the capture; the next cycle includes it"
                break
            }
            lastRound = next.reduce(0) { $0 + $1.changedBytes }
            progress.total += lastRound
            try await send(next, channel: channel, progress: &progress)
            current = next
            rounds += 1
        }

        // The residue, frozen.
        var consistent = false
        var frozenFor: Duration?
        var captureTime = Timestamp.now()
        if nothingToFreeze {
            consistent = true
            frozenFor = .zero
            captureTime = firstCollectTime
        } else if why == nil {
            for attempt in 1...max(1, options.freezeAttempts) {
                do {
                    let capture = try await captureFrozen(since: current)
                    created.append(capture.sets.map(\.epoch))
                    guard capture.sets.map(\.volumeSize) == sizes else {
                        why = "a volume grew during the capture; the next cycle includes it"
                        break
                    }
                    progress.total += capture.sets.reduce(0) { $0 + $1.changedBytes }
                    try await send(capture, channel: channel, progress: &progress)
                    current = capture.sets
                    consistent = true
                    frozenFor = capture.frozenFor
                    captureTime = capture.time
                    why = nil
                    break
                } catch let error as LifeboatError where ["freeze.timeout", "freeze.residue-too-large"].contains(error.code.rawValue) {
                    why = error.message
                    logger.warning("consistent capture failed", metadata: ["attempt": "\(attempt)", "error": "\(error.message)"])
                    guard attempt < options.freezeAttempts else { break }
                    // Another unfrozen round shrinks what the next freeze must capture.
                    let next = try await collect(since: current)
                    created.append(next.map(\.epoch))
                    guard next.map(\.volumeSize) == sizes else {
                        why = "a volume grew during the capture; the next cycle includes it"
                        break
                    }
                    progress.total += next.reduce(0) { $0 + $1.changedBytes }
                    try await send(next, channel: channel, progress: &progress)
                    current = next
                    captureTime = Timestamp.now()
                } catch let error as LifeboatError where error.code.rawValue.hasPrefix("freeze.") {
                    why = error.message
                    logger.error("cannot freeze filesystems", metadata: ["error": "\(error.message)"])
                    break
                }
            }
        }
        if consistent && !unfreezable.isEmpty {
            consistent = false
            why = "\(unfreezable.joined(separator: ", ")) holds the agent's state and cannot be frozen; move --state to a filesystem that is not replicated"
        }
        if !consistent { captureTime = Timestamp.now() }

        let epochs = current.map(\.epoch)
        var names: [String: UInt64] = [:]
        for (entry, epoch) in zip(trackers, epochs) { names[entry.volume.name] = epoch }
        try PendingCommit(sequence: sequence, epochs: names, completesInitialSync: earlierParts != nil ? true : nil).write(state)
        try await channel.perform(channel.machine.endCommit(consistent: consistent, captureTime: captureTime, epochs: epochs))
        let answer = try await channel.nextEvent()
        switch answer {
        case .committed(_, let point, _):
            try await acknowledge(epochs)
            try PendingCommit.remove(state)
            try InitialSyncProgress.remove(state)
            lastSizes.value = sizes
            if consistent {
                status.set(.continuous)
            } else {
                status.set(.stalled, reason: "no crash-consistent point: \(why ?? "capture failed")")
            }
            try await report(channel, SendProgress())
            logger.info(
                "point committed",
                metadata: [
                    "sequence": "\(sequence)", "point": "\(point)", "bytes": "\(progress.sent)", "consistent": "\(consistent)",
                    "frozen": "\(frozenFor.map { "\($0)" } ?? "-")",
                ]
            )
            return CycleOutcome(
                kind: .committed(point: point, consistent: consistent),
                sequence: sequence,
                changedBytes: progress.sent,
                inconsistencyReason: consistent ? nil : why,
                frozenFor: frozenFor
            )
        case .commitRejected(_, let reason):
            return try await rejected(reason, sequence: sequence, sets: first, created: created, channel: channel)
        default:
            throw Self.sessionError(answer, while: "waiting for the acknowledgement of commit \(sequence)")
        }
    }

    /// The change sets to send in this commit and the bytes left for later ones: everything, unless they hold
    /// more than `limit` bytes — then the extents are cut after `limit` bytes (4 KiB aligned), volume by volume.
    /// The trackers keep what was not read as changed (see `ChangeTracker.acknowledge`).
    static func part(of sets: [ChangeSet], limit: Int64) -> (sets: [ChangeSet], remaining: Int64) {
        let total = sets.reduce(Int64(0)) { $0 + $1.changedBytes }
        guard total > limit else { return (sets, 0) }
        var budget = max(Int64(4096), limit / 4096 * 4096)
        var remaining: Int64 = 0
        let cut = sets.map { set -> ChangeSet in
            var part = set
            part.extents = []
            for extent in set.extents {
                if budget >= extent.length {
                    part.extents.append(extent)
                    budget -= extent.length
                } else {
                    if budget > 0 { part.extents.append(ChangedExtent(offset: extent.offset, length: budget)) }
                    remaining += extent.length - budget
                    budget = 0
                }
            }
            return part
        }
        return (cut, remaining)
    }

    /// Ends a commit that holds part of an initial sync: not a recovery point (not crash-consistent, and the
    /// volumes hold zeros where the rest goes), but durable, so that the next part builds on it.
    private func commitPart(
        _ sets: [ChangeSet],
        sequence: UInt64,
        channel: SessionChannel,
        progress: SendProgress,
        after earlier: InitialSyncProgress?,
        remaining: Int64,
        created: [[UInt64]]
    ) async throws -> CycleOutcome {
        let epochs = sets.map(\.epoch)
        var names: [String: UInt64] = [:]
        for (entry, epoch) in zip(trackers, epochs) { names[entry.volume.name] = epoch }
        let rescan = earlier?.rescan ?? sets.contains { if case .rescan = $0.reason { true } else { false } }
        let after = InitialSyncProgress(
            committedBytes: (earlier?.committedBytes ?? 0) + progress.sent,
            parts: (earlier?.parts ?? 0) + 1,
            rescan: rescan
        )
        try PendingCommit(sequence: sequence, epochs: names, initialSyncAfter: after).write(state)
        try await channel.perform(channel.machine.endCommit(consistent: false, captureTime: Timestamp.now(), epochs: epochs))
        let answer = try await channel.nextEvent()
        switch answer {
        case .committed(_, let point, _):
            try await acknowledge(epochs)
            try after.write(state)
            try PendingCommit.remove(state)
            lastSizes.value = sets.map(\.volumeSize)
            try await report(channel, SendProgress(total: remaining, earlier: after.committedBytes))
            logger.info(
                "initial sync part committed",
                metadata: [
                    "sequence": "\(sequence)", "point": "\(point)", "bytes": "\(progress.sent)", "durable": "\(after.committedBytes)",
                    "remaining": "\(remaining)",
                ]
            )
            return CycleOutcome(
                kind: .initialSyncPart(point: point, committedBytes: after.committedBytes, remainingBytes: remaining),
                sequence: sequence,
                changedBytes: progress.sent
            )
        case .commitRejected(_, let reason):
            return try await rejected(reason, sequence: sequence, sets: sets, created: created, channel: channel)
        default:
            throw Self.sessionError(answer, while: "waiting for the acknowledgement of commit \(sequence)")
        }
    }

    /// The server made the commit durable: the trackers forget its changes, durably.
    private func acknowledge(_ epochs: [UInt64]) async throws {
        let trackers = self.trackers
        try await pool.blocking {
            for (entry, epoch) in zip(trackers, epochs) { try entry.tracker.acknowledge(epoch: epoch) }
        }
    }

    /// The server did not store the commit: its changes stay pending (STALLED with the reason), or the agent
    /// reconnects (another sequence landed) or rescans (the server lost the base).
    private func rejected(
        _ reason: CloseReason,
        sequence: UInt64,
        sets: [ChangeSet],
        created: [[UInt64]],
        channel: SessionChannel
    ) async throws -> CycleOutcome {
        abandon(created)
        try PendingCommit.remove(state)
        if reason.code == "replication.out-of-sequence" {
            // The server stored a commit this session did not see acknowledged: a new session's WELCOME says which.
            throw LifeboatError(LifeboatError.Code(reason.code), reason.message)
        }
        if reason.code == "replication.unknown-base" {
            for (entry, set) in zip(trackers, sets) where set.baseEpoch != 0 {
                try entry.tracker.invalidate(reason: "the server no longer holds the state this volume built on")
            }
        }
        status.set(.stalled, reason: "the server did not store the last commit: \(reason.message)")
        try await report(channel, SendProgress())
        logger.warning("commit rejected", metadata: ["sequence": "\(sequence)", "reason": "\(reason)"])
        return CycleOutcome(kind: .rejected(code: reason.code, message: reason.message), sequence: sequence, changedBytes: 0)
    }

    /// Changes at or above this at the start of a cycle make the state BACKLOG rather than CONTINUOUS.
    static let backlogThreshold: Int64 = 256 << 20

    private func abandon(_ created: [[UInt64]]) {
        for round in created {
            for (entry, epoch) in zip(trackers, round) { entry.tracker.abandon(epoch: epoch) }
        }
    }

    /// Collects every volume (from the acknowledged state, or since the previous round), on the thread pool.
    private func collect(since previous: [ChangeSet]?) async throws -> [ChangeSet] {
        let trackers = self.trackers
        let started = ContinuousClock.now
        let sets = try await pool.blocking {
            try trackers.indices.map { i in
                if let previous {
                    try trackers[i].tracker.collect(since: previous[i].epoch)
                } else {
                    try trackers[i].tracker.collect()
                }
            }
        }
        logger.debug(
            "collected",
            metadata: [
                "took": "\(ContinuousClock.now - started)", "changed-bytes": "\(sets.reduce(0) { $0 + $1.changedBytes })",
                "round": "\(previous == nil ? "first" : "later")",
            ]
        )
        return sets
    }

    /// Freezes the machine's filesystems, collects the residue and reads it into memory, thaws.
    private func captureFrozen(since previous: [ChangeSet]) async throws -> FrozenCapture {
        let trackers = self.trackers
        let freezer = self.freezer
        let limit = options.maxFrozenResidueBytes
        let maxFreeze = self.maxFreeze.value
        return try await pool.blocking { () throws -> FrozenCapture in
            let (captured, frozenFor) = try freezer.withFrozen(maxDuration: maxFreeze) {
                () throws -> (sets: [ChangeSet], data: [[[UInt8]]], time: Timestamp) in
                let time = Timestamp.now()
                let sets = try trackers.indices.map { i in try trackers[i].tracker.collect(since: previous[i].epoch) }
                let residue = sets.reduce(Int64(0)) { $0 + $1.changedBytes }
                guard residue <= limit else {
                    for (entry, set) in zip(trackers, sets) { entry.tracker.abandon(epoch: set.epoch) }
                    throw LifeboatError(
                        "freeze.residue-too-large",
                        "\(residue) bytes changed during the last round, more than can be read while frozen (\(limit))"
                    )
                }
                let data = try zip(trackers, sets).map { entry, set in
                    try set.extents.map { extent in
                        try Self.readExtent(entry.tracker, extent, epoch: set.epoch)
                    }
                }
                return (sets, data, time)
            }
            return FrozenCapture(sets: captured.sets, data: captured.data, time: captured.time, frozenFor: frozenFor)
        }
    }

    /// Sends the extents of change sets, read through their trackers in pieces, several pieces read and
    /// compressed ahead on the thread pool while the current one is written. `skipZeros`: pieces that read as
    /// zeros are not sent for volumes whose receiver starts from an empty volume (base epoch 0) — only in a
    /// commit's first round: a later round may have to turn earlier bytes back into zeros.
    private func send(_ sets: [ChangeSet], channel: SessionChannel, progress: inout SendProgress, skipZeros: Bool = false) async throws {
        var pieces: [(volume: Int, extent: ChangedExtent, epoch: UInt64, skipZeros: Bool)] = []
        for (index, set) in sets.enumerated() {
            let zerosNeedNoSending = skipZeros && set.baseEpoch == 0
            for extent in set.extents {
                var offset = extent.offset
                while offset < extent.end {
                    let length = min(Int64(options.pieceBytes), extent.end - offset)
                    pieces.append((index, ChangedExtent(offset: offset, length: length), set.epoch, zerosNeedNoSending))
                    offset += length
                }
            }
        }
        guard !pieces.isEmpty else { return }
        let trackers = self.trackers
        let encoders = self.encoders
        let pool = self.pool
        var chooser = compressionChoice.value
        defer {
            compressionChoice.value = chooser
            logger.debug("wire compression", metadata: chooser.metadata)
        }
        @Sendable func read(_ piece: (volume: Int, extent: ChangedExtent, epoch: UInt64, skipZeros: Bool), compress: Bool) async throws -> WirePiece? {
            try await pool.blocking {
                let bytes = try Self.readExtent(trackers[piece.volume].tracker, piece.extent, epoch: piece.epoch)
                if piece.skipZeros && bytes.withUnsafeBytes({ RawMemory.isZero($0) }) { return nil }
                return WirePiece.encode(bytes, at: UInt64(piece.extent.offset), compress: compress, encoders: encoders)
            }
        }
        // Pieces read and compressed ahead, oldest first.
        var ahead: [Task<WirePiece?, any Error>] = []
        var nextToStart = 0
        func refill() {
            while ahead.count < Self.readAhead && nextToStart < pieces.count {
                let piece = pieces[nextToStart]
                let compress = chooser.next()
                ahead.append(Task { try await read(piece, compress: compress) })
                nextToStart += 1
            }
        }
        defer { for task in ahead { task.cancel() } }
        refill()
        var lastDelivery = ContinuousClock.now
        var waitedForPieces = Duration.zero
        var waitedForLink = Duration.zero
        defer { logger.debug("send waits", metadata: ["pieces": "\(waitedForPieces)", "link": "\(waitedForLink)", "count": "\(pieces.count)"]) }
        for piece in pieces {
            let t0 = ContinuousClock.now
            let wire = try await ahead.removeFirst().value
            waitedForPieces += ContinuousClock.now - t0
            refill()
            if let wire {
                let t1 = ContinuousClock.now
                defer { waitedForLink += ContinuousClock.now - t1 }
                try await throttle.acquire(bytes: wire.data.count)
                try await channel.perform(
                    channel.machine.extent(
                        volume: UInt16(piece.volume),
                        offset: UInt64(piece.extent.offset),
                        encoding: wire.encoding,
                        rawLength: UInt32(piece.extent.length),
                        data: wire.data
                    )
                )
                let now = ContinuousClock.now
                chooser.delivered(bytes: Int(piece.extent.length), in: now - lastDelivery, compressed: wire.encoding != 0)
                lastDelivery = now
            }
            progress.sent += piece.extent.length
            if ContinuousClock.now - progress.lastReport > .seconds(2) {
                try await report(channel, progress)
                progress.lastReport = ContinuousClock.now
            }
        }
    }

    /// An extent's bytes as the tracker reads them, into an array that is not zeroed first (every byte is read).
    static func readExtent(_ tracker: any ChangeTracker, _ extent: ChangedExtent, epoch: UInt64) throws -> [UInt8] {
        let count = Int(extent.length)
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            try tracker.read(extent, epoch: epoch, into: UnsafeMutableRawBufferPointer(buffer))
            initialized = count
        }
    }

    /// Pieces read and encoded ahead of the one being sent, enough to keep the pool busy: counted in pieces, and
    /// an initial sync's pieces are often small (the data runs between holes; 216 KiB on average on the
    /// benchmark image).
    static let readAhead = 32

    /// Sends a frozen capture's bytes (already in memory).
    private func send(_ capture: FrozenCapture, channel: SessionChannel, progress: inout SendProgress) async throws {
        var chooser = compressionChoice.value
        defer { compressionChoice.value = chooser }
        for (index, set) in capture.sets.enumerated() {
            for (extent, bytes) in zip(set.extents, capture.data[index]) {
                var start = 0
                while start < bytes.count {
                    let count = min(options.pieceBytes, bytes.count - start)
                    let offset = UInt64(extent.offset) + UInt64(start)
                    let wire = WirePiece.encode(Array(bytes[start..<(start + count)]), at: offset, compress: chooser.next(), encoders: encoders)
                    try await throttle.acquire(bytes: wire.data.count)
                    try await channel.perform(
                        channel.machine.extent(
                            volume: UInt16(index),
                            offset: offset,
                            encoding: wire.encoding,
                            rawLength: UInt32(count),
                            data: wire.data
                        )
                    )
                    progress.sent += Int64(count)
                    start += count
                }
            }
        }
    }

    /// Tells the server where replication stands.
    func report(_ channel: SessionChannel, _ progress: SendProgress) async throws {
        let (state, reason) = status.current
        try await channel.outbound.write(
            .status(
                state: state,
                backlogBytes: UInt64(max(0, progress.total - progress.sent)),
                syncedBytes: UInt64(progress.earlier + progress.sent),
                totalBytes: UInt64(progress.earlier + progress.total),
                reason: reason ?? ""
            )
        )
    }
}

/// Chooses whether the agent compresses what it sends. `always` and `never` are fixed. `auto` sends in epochs of
/// 32 MiB one way, measures the raw bytes per second the epoch delivered (reading, compressing, the throttle, the
/// link and the server's back-pressure together), and sends the next epoch the faster way — measuring the other
/// way first, and again now and then because conditions change (after 8 epochs, twice as long each time the
/// other way is still slower, up to 128). Compression wins on a slow or throttled link
/// (fewer bytes to carry); raw wins when the link is fast and the CPU is the limit: the server then stores the
/// chunks plain and compresses them in the background (`Store.compressDeferred`). Kept across cycles, so small
/// cycles add up to epochs.
struct CompressionChooser {
    let mode: WireCompression
    /// Raw bytes per second of the last finished epoch, compressed (true) and raw (false).
    private(set) var rate: [Bool: Double] = [:]
    /// The way pieces are started now (auto).
    private(set) var compressing = false
    private var epochBytes = 0
    private var epochSeconds = 0.0
    private var sinceExploring = 0
    private var exploreInterval = CompressionChooser.firstExploreInterval
    private var exploring = false
    /// The first epoch is not measured: a connection's first megabytes (TCP slow start, threads and caches
    /// warming up) go slower than what follows and would make the way measured first look worse for good.
    private var warmingUp = true
    /// Pieces started each way, for the log.
    private(set) var startedCompressed = 0
    private(set) var startedRaw = 0

    static let epochBytes = 32 << 20
    static let firstExploreInterval = 8
    static let longestExploreInterval = 128

    init(mode: WireCompression) { self.mode = mode }

    /// Whether to compress the next piece started.
    mutating func next() -> Bool {
        let compress: Bool
        switch mode {
        case .always: compress = true
        case .never: compress = false
        case .auto: compress = compressing
        }
        if compress { startedCompressed += 1 } else { startedRaw += 1 }
        return compress
    }

    /// A piece of `bytes` raw bytes was delivered `elapsed` after the one before.
    mutating func delivered(bytes: Int, in elapsed: Duration, compressed: Bool) {
        // Pieces started before the epoch began (read ahead) do not count for it.
        guard mode == .auto, compressed == compressing else { return }
        epochBytes += bytes
        epochSeconds += Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        guard epochBytes >= Self.epochBytes else { return }
        defer {
            epochBytes = 0
            epochSeconds = 0
        }
        if warmingUp {
            warmingUp = false
            return
        }
        rate[compressing] = Double(epochBytes) / max(epochSeconds, 1e-6)
        guard let compressedRate = rate[true], let rawRate = rate[false] else {
            compressing.toggle()  // measure the other way once
            return
        }
        let faster = compressedRate > rawRate
        if exploring {
            // The way just measured again: still slower, so look less often; faster now, so switch and stay alert.
            exploring = false
            exploreInterval = faster == compressing ? Self.firstExploreInterval : min(exploreInterval * 2, Self.longestExploreInterval)
            sinceExploring = 0
            compressing = faster
            return
        }
        sinceExploring += 1
        if sinceExploring >= exploreInterval {
            exploring = true
            compressing = !faster
        } else {
            compressing = faster
        }
    }

    var metadata: Logger.Metadata {
        [
            "mode": "\(mode.rawValue)", "compressed-pieces": "\(startedCompressed)", "raw-pieces": "\(startedRaw)",
            "compressed-mb-s": "\(rate[true].map { String(Int($0 / 1e6)) } ?? "-")",
            "raw-mb-s": "\(rate[false].map { String(Int($0 / 1e6)) } ?? "-")",
        ]
    }
}

/// One piece as it goes on the wire: raw (encoding 0) or one zstd frame per 64 KiB segment piece (2).
struct WirePiece: Sendable {
    var encoding: UInt8
    var data: [UInt8]

    static func encode(_ bytes: [UInt8], at offset: UInt64, compress: Bool, encoders: EncoderPool) -> WirePiece {
        guard compress else { return WirePiece(encoding: 0, data: bytes) }
        let frames = encoders.with { encoder in bytes.withUnsafeBytes { encoder.encode($0, at: offset) } }
        return WirePiece(encoding: SegmentFrames.encoding, data: frames)
    }
}

/// Segment-frame encoders for the reading threads: one per concurrent user.
final class EncoderPool: @unchecked Sendable {
    private let lock = PlainLock()
    private var idle: [SegmentFrames.Encoder] = []

    func with<T>(_ body: (SegmentFrames.Encoder) -> T) -> T {
        let encoder = lock.withLock { idle.popLast() } ?? SegmentFrames.Encoder()
        defer { lock.withLock { idle.append(encoder) } }
        return body(encoder)
    }
}
