import Crypto
import Dispatch
import LifeboatCore
import LifeboatSystem
import SystemPackage

#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Musl)
    @preconcurrency import Musl
#endif

/// A `ChangeTracker` that finds changes by reading the volume: one fingerprint per 4 KiB block, compared with
/// the fingerprints of the acknowledged state, which persist in the state directory. Works on an image file or
/// a block device, needs no kernel support, and an agent restart costs a read of the volume, never a full copy.
///
/// State, per volume, in `stateDirectory` (created if missing):
/// - `<name>.fpmap` — the acknowledged fingerprints (format in `FingerprintMapFile`), replaced atomically and
///   durably by `acknowledge(epoch:)`. Missing: `.initialSync`. Damaged, torn, of another volume, unreadable:
///   `.rescan(why)`, never a crash.
/// - `<name>.epoch` — the highest epoch handed out, written (atomically, durably) before `collect` returns, so
///   an epoch number never names two different change sets.
/// - `<name>.lock` — flock'ed while the tracker lives: one tracker per volume (`tracker.locked`).
///
/// `<name>` is `stateName(for:)`: the volume id with unsafe characters replaced, plus a hash of the id.
///
/// Choices:
/// - Initial sync and rescan (no acknowledged map) do not scan first: they report every range that may hold
///   data (a sparse file's data ranges, else the whole volume) onto an empty volume (base epoch 0), and count
///   every block as zero until `read` delivers it; the agent skips pieces that read as zeros. A volume that
///   grew reports the blocks of the new area that are not all zero (the receiver extends with zeros). Both
///   follow one rule: a block the base does not have counts as a zero block.
/// - With write hints a rescan scans and reports the whole volume: the next hinted collect builds on that scan.
/// - `acknowledge` records what `read` delivered: reported blocks never read keep what the receiver holds
///   (zeros on an empty base, else the base's fingerprint), so a change set may land in parts.
/// - A volume smaller than its acknowledged state fails with `tracker.volume-shrank`.
/// - Collected-but-unacknowledged epochs keep their full fingerprint map in memory until acknowledged or
///   abandoned; at most `Options.maxOutstandingEpochs` of them (the oldest is dropped first, and
///   acknowledging it then fails with `tracker.unknown-epoch`; its changes are in every later epoch).
/// - `read(_:epoch:into:)` re-fingerprints what it hands out and records that in the epoch's map: a block that
///   changed after the scan is remembered as what the receiver actually got, so if it later changes back to
///   its scanned content it is still reported.
public final class ScanTracker: ChangeTracker, @unchecked Sendable {
    public struct Options: Sendable {
        /// Threads reading and fingerprinting during `collect`.
        public var threads: Int
        /// Bytes per read and per unit of work; a multiple of 4096.
        public var chunkSize: Int
        /// Collected epochs kept for acknowledgement at most.
        public var maxOutstandingEpochs: Int

        public init(threads: Int = 2, chunkSize: Int = 4 << 20, maxOutstandingEpochs: Int = 4) {
            self.threads = threads
            self.chunkSize = chunkSize
            self.maxOutstandingEpochs = maxOutstandingEpochs
        }
    }

    public static let blockSize = Fingerprint.blockSize

    public let volume: String
    /// The image file or block device that is read; opened once, by `init` (its size is read at every collect).
    public let path: String
    public let stateDirectory: String
    /// `<state dir>/<name>.fpmap`: the acknowledged fingerprints.
    public let mapPath: String
    /// `<state dir>/<name>.epoch`: the highest epoch handed out.
    public let epochPath: String
    public let options: Options

    private let device: FileDescriptor
    private let lockFile: FileDescriptor
    /// A block device's page cache is not coherent with what a mounted filesystem writes (file data bypasses
    /// it; metadata buffers the filesystem holds are newer than the device until written): block devices are read
    /// with O_DIRECT, which returns exactly what is on the device (and `read` goes through an aligned buffer).
    private let isBlockDevice: Bool
    /// O_DIRECT (Linux, x86-64 and arm64 differ; Glibc's Swift module does not export it).
    #if arch(arm64)
        static let directFlag: Int32 = 0o200000
    #else
        static let directFlag: Int32 = 0o40000
    #endif

    /// The acknowledged state: what `collect` compares with.
    private struct Base {
        var map: FingerprintMap?
        var epoch: UInt64
        var volumeSize: Int64
        /// `.incremental` with a map; `.initialSync` or `.rescan` without.
        var reason: ChangeSet.Reason
    }

    /// A collected epoch waiting for acknowledgement: the fingerprints of what the receiver will have.
    private struct Pending {
        var epoch: UInt64
        var volumeSize: Int64
        var map: FingerprintMap
        /// The extents reported for this epoch, whether they apply to an empty volume (base epoch 0), and
        /// which blocks `read` delivered: an acknowledged block that was not read keeps what the receiver holds.
        var extents: [ChangedExtent]
        var baseIsEmpty: Bool
        var read: BlockMarks
    }

    /// Optional hints of where the volume was written (see `ChangeHints`).
    public let hints: (any ChangeHints)?
    /// The volume's content as last scanned (and updated by the reads of its epoch): what a hinted collect
    /// starts from. Nil until the first full scan.
    private var lastScan: (map: FingerprintMap, size: Int64)?
    /// How the last collect found its blocks, for logs and tests.
    public private(set) var lastCollectWasFullScan = true

    private let lock = PlainLock()
    private var base: Base
    /// The function and key of the volume's fingerprints: the acknowledged map's, or new (`gmac`, random key)
    /// when there is none. Replaced only by `invalidate`, which drops every map made with the old one.
    private var fingerprinter: BlockFingerprinter
    private var pending: [Pending] = []  // ascending epochs
    private var issuedEpoch: UInt64
    private var collecting = false
    private var acknowledging = false

    /// Opens the volume and loads the tracker's state for it.
    ///
    /// - Parameters:
    ///   - volume: the volume's identifier (any non-empty string; it names the state files).
    ///   - path: the image file or block device to read.
    ///   - stateDirectory: where the fingerprint map lives; created (mode 0700) if missing.
    /// - Throws: `io.*` when the volume or the state directory cannot be opened, `tracker.locked` when another
    ///   tracker uses this volume's state, `tracker.not-a-volume` for anything but a file or block device.
    ///   A missing or damaged fingerprint map is not an error: `collect` reports `.initialSync` or `.rescan`.
    public init(
        volume: String,
        path: String,
        stateDirectory: String,
        options: Options = Options(),
        hints: (any ChangeHints)? = nil
    ) throws {
        self.hints = hints
        guard !volume.isEmpty else {
            throw LifeboatError("tracker.invalid-volume", "the volume identifier must not be empty")
        }
        guard options.chunkSize > 0, options.chunkSize % Fingerprint.blockSize == 0, options.threads >= 1,
            options.maxOutstandingEpochs >= 1
        else {
            throw LifeboatError(
                "tracker.invalid-options",
                "chunk size must be a positive multiple of 4096, threads and outstanding epochs at least 1"
            )
        }
        self.volume = volume
        self.path = path
        self.stateDirectory = stateDirectory
        self.options = options
        let name = Self.stateName(for: volume)
        mapPath = stateDirectory + "/" + name + ".fpmap"
        epochPath = stateDirectory + "/" + name + ".epoch"

        try SystemCalls.makeDirectory(stateDirectory)
        let lockFile = try SystemCalls.lockExclusively(stateDirectory + "/" + name + ".lock", what: "volume \(volume)")
        let device: FileDescriptor
        do {
            device = try SystemCalls.open(path, .readOnly)
            do {
                _ = try SystemCalls.size(of: device, path: path)
            } catch {
                try? device.close()
                throw error
            }
            // Left by an acknowledge or collect that died between writing and renaming.
            try SystemCalls.unlink(mapPath + ".tmp")
            try SystemCalls.unlink(epochPath + ".tmp")
        } catch {
            try? lockFile.close()
            throw error
        }
        self.lockFile = lockFile
        var info = stat()
        let block = fstat(device.rawValue, &info) == 0 && (info.st_mode & S_IFMT) == S_IFBLK
        var chosen = device
        if block {
            // Past the page cache: the device's own bytes, whatever a mounted filesystem keeps in memory.
            let direct = Glibc.open(path, O_RDONLY | Self.directFlag | O_CLOEXEC)
            if direct >= 0 {
                try? device.close()
                chosen = FileDescriptor(rawValue: direct)
            }
        }
        self.device = chosen
        isBlockDevice = block

        do {
            if let contents = try FingerprintMapFile.read(mapPath, volume: volume) {
                fingerprinter = contents.fingerprinter
                base = Base(
                    map: contents.map,
                    epoch: contents.epoch,
                    volumeSize: contents.volumeSize,
                    reason: .incremental
                )
            } else {
                fingerprinter = .fresh()
                base = Base(map: nil, epoch: 0, volumeSize: 0, reason: .initialSync)
            }
        } catch {
            fingerprinter = .fresh()
            base = Base(map: nil, epoch: 0, volumeSize: 0, reason: .rescan(error.why))
        }
        issuedEpoch = max(EpochFile.read(epochPath) ?? 0, base.epoch)
    }

    deinit {
        try? device.close()
        try? lockFile.close()
    }

    /// The file name stem of a volume's state: the identifier with every character other than letters, digits,
    /// `.`, `_` and `-` replaced by `_` (at most 64 of them), then `-` and 8 hex digits of SHA-256 of the
    /// identifier, so that distinct identifiers do not share state (the map also records a 128-bit tag of the
    /// identifier and is not used for another volume).
    public static func stateName(for volume: String) -> String {
        var safe = ""
        for scalar in volume.unicodeScalars.prefix(64) {
            let ok =
                (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || (scalar >= "0" && scalar <= "9")
                || scalar == "." || scalar == "_" || scalar == "-"
            safe.unicodeScalars.append(ok ? scalar : "_")
        }
        if safe.hasPrefix(".") { safe = "_" + safe.dropFirst() }
        let tag = FingerprintMapFile.volumeTag(volume).prefix(4)
        let hex = tag.map { byte in
            let digits = Array("0123456789abcdef")
            return String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 15)])
        }.joined()
        return safe + "-" + hex
    }

    /// The epoch of the state the receiver acknowledged last; 0 when none is known.
    public var acknowledgedEpoch: UInt64 { lock.withLock { base.epoch } }

    /// Epochs collected and neither acknowledged nor abandoned, oldest first.
    public var outstandingEpochs: [UInt64] { lock.withLock { pending.map(\.epoch) } }

    // MARK: - ChangeTracker

    public func collect() throws -> ChangeSet {
        try collect(relativeTo: nil)
    }

    public func collect(since epoch: UInt64) throws -> ChangeSet {
        try collect(relativeTo: epoch)
    }

    /// A full scan compared with the acknowledged base (`since` nil) or with what an outstanding epoch read.
    private func collect(relativeTo since: UInt64?) throws -> ChangeSet {
        try lock.withLock { () throws in
            guard !collecting else {
                throw LifeboatError("tracker.busy", "a collect of volume \(volume) is already running")
            }
            collecting = true
        }
        defer { lock.withLock { collecting = false } }

        let size = try SystemCalls.size(of: device, path: path)
        let (base, fingerprinter) = lock.withLock { (self.base, self.fingerprinter) }
        if base.map != nil, size < base.volumeSize {
            throw LifeboatError(
                "tracker.volume-shrank",
                "volume \(volume) (\(path)) shrank from \(base.volumeSize) to \(size) bytes since epoch \(base.epoch): "
                    + "shrinking is not replicated; restore its size, or remove \(mapPath) to start over with an "
                    + "initial sync"
            )
        }

        var previous: Pending?
        if let since {
            previous = lock.withLock { pending.first { $0.epoch == since } }
            guard let previous else { throw unknownEpoch(since) }
            guard size >= previous.volumeSize else { throw shrankWhileReading(at: size) }
        }

        let map: FingerprintMap
        let extents: [ChangedExtent]
        let lazy = since == nil && base.map == nil && hints == nil
        if lazy {
            // Initial sync or rescan: no scan before sending. Every block counts as zero until `read` records
            // what it read, and the extents are every range that may hold data (the data ranges of a sparse
            // file, all of anything else): the volume is read once instead of twice, and the agent does not
            // send pieces that read as zeros — the receiver starts from an empty volume. With write hints a
            // real scan is needed: the next collect builds on it.
            let blocks = Int((size + Int64(Fingerprint.blockSize) - 1) / Int64(Fingerprint.blockSize))
            map = FingerprintMap(count: blocks, filledWith: fingerprinter.zero)
            extents = try possibleData(size: size)
        } else {
            map = try currentContent(size: size, fingerprinter: fingerprinter)
            if let previous {
                extents = Self.differences(map, previous.map, volumeSize: size, zero: fingerprinter.zero)
            } else {
                switch base.reason {
                case .rescan:
                    extents = size > 0 ? [ChangedExtent(offset: 0, length: size)] : []
                case .initialSync, .incremental:
                    extents = Self.differences(map, base.map, volumeSize: size, zero: fingerprinter.zero)
                }
            }
        }

        // Make the epoch durable before anyone can send it.
        let epoch = lock.withLock { issuedEpoch } + 1
        try EpochFile.write(epoch, to: epochPath)
        lock.withLock {
            issuedEpoch = epoch
            let baseIsEmpty = previous?.baseIsEmpty ?? (base.reason != .incremental)
            pending.append(
                Pending(epoch: epoch, volumeSize: size, map: map, extents: extents, baseIsEmpty: baseIsEmpty, read: BlockMarks(count: map.count))
            )
            if pending.count > options.maxOutstandingEpochs {
                pending.removeFirst(pending.count - options.maxOutstandingEpochs)
            }
        }
        return ChangeSet(
            epoch: epoch,
            baseEpoch: base.reason == .incremental ? base.epoch : 0,
            volumeSize: size,
            extents: extents,
            reason: base.reason
        )
    }

    public func read(_ extent: ChangedExtent, epoch: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard let found = lock.withLock({ pending.first { $0.epoch == epoch }.map { ($0, self.fingerprinter) } }) else {
            throw unknownEpoch(epoch)
        }
        let (entry, fingerprinter) = found
        let bs = Int64(Fingerprint.blockSize)
        let end = extent.offset + extent.length
        guard extent.offset >= 0, extent.length > 0, extent.offset % bs == 0, end <= entry.volumeSize,
            extent.length % bs == 0 || end == entry.volumeSize
        else {
            throw LifeboatError(
                "tracker.bad-extent",
                "extent \(extent) is not 4 KiB aligned inside volume \(volume) of \(entry.volumeSize) bytes "
                    + "(epoch \(epoch))"
            )
        }
        guard buffer.count >= Int(extent.length) else {
            throw LifeboatError(
                "tracker.bad-extent",
                "a buffer of \(buffer.count) bytes cannot hold extent \(extent) of volume \(volume)"
            )
        }
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(extent.length)])
        if isBlockDevice {
            // O_DIRECT wants aligned memory: read into an aligned buffer, then copy.
            let padded = (Int(extent.length) + 511) / 512 * 512
            let aligned = UnsafeMutableRawBufferPointer.allocate(byteCount: padded, alignment: 4096)
            defer { aligned.deallocate() }
            let got = try SystemCalls.preadFully(device, into: aligned, at: extent.offset, path: path)
            guard got >= target.count else { throw shrankWhileReading(at: extent.offset + Int64(got)) }
            target.copyMemory(from: UnsafeRawBufferPointer(rebasing: aligned[0..<target.count]))
        } else {
            let got = try SystemCalls.preadFully(device, into: target, at: extent.offset, path: path)
            guard got == target.count else { throw shrankWhileReading(at: extent.offset + Int64(got)) }
        }

        let first = Int(extent.offset / bs)
        let count = (target.count + Fingerprint.blockSize - 1) / Fingerprint.blockSize
        var fingerprints = [Fingerprint]()
        fingerprints.reserveCapacity(count)
        for i in 0..<count {
            let start = i * Fingerprint.blockSize
            let block = UnsafeRawBufferPointer(
                rebasing: target[start..<min(start + Fingerprint.blockSize, target.count)]
            )
            fingerprints.append(fingerprinter.ofPartial(block))
        }
        lock.withLock {
            // Only while the epoch is still pending: an acknowledge in flight has taken its map already.
            guard pending.contains(where: { $0.map === entry.map }) else { return }
            for i in 0..<count { entry.map[first + i] = fingerprints[i] }
            entry.read.mark(first..<(first + count))
        }
    }

    public func acknowledge(epoch: UInt64) throws {
        let taken: [Pending]? = try lock.withLock { () throws -> [Pending]? in
            guard !acknowledging else {
                throw LifeboatError("tracker.busy", "an acknowledge of volume \(volume) is already running")
            }
            if epoch <= base.epoch { return nil }  // a duplicate: already durable
            guard let index = pending.firstIndex(where: { $0.epoch == epoch }) else { throw unknownEpoch(epoch) }
            let taken = Array(pending[...index])
            pending.removeFirst(index + 1)
            acknowledging = true
            return taken
        }
        guard let taken, let entry = taken.last else { return }
        defer { lock.withLock { acknowledging = false } }
        // Blocks reported but never read (the receiver got part of the change set) keep what the receiver
        // holds: zeros on an empty base, else the base's fingerprint. On a copy: the map may also be the last
        // scan, which describes the volume.
        var map = entry.map
        let (unsent, fingerprinter) = lock.withLock { (Self.unread(taken), self.fingerprinter) }
        if !unsent.isEmpty {
            map = entry.map.copy()
            let old = lock.withLock { base.map }
            let zero = fingerprinter.zero
            for block in unsent {
                map[block] = entry.baseIsEmpty ? zero : old.map { block < $0.count ? $0[block] : zero } ?? zero
            }
        }
        do {
            try FingerprintMapFile.write(
                FingerprintMapFile.Contents(
                    volumeSize: entry.volumeSize,
                    epoch: epoch,
                    map: map,
                    fingerprinter: fingerprinter
                ),
                volume: volume,
                to: mapPath
            )
        } catch {
            lock.withLock { pending = taken + pending }
            throw LifeboatError(
                "tracker.acknowledge-failed",
                "cannot record epoch \(epoch) of volume \(volume) as acknowledged: its changes will be reported again",
                cause: error
            )
        }
        lock.withLock {
            base = Base(map: map, epoch: epoch, volumeSize: entry.volumeSize, reason: .incremental)
        }
    }

    /// The blocks of the epochs' extents that no read delivered: not read in their epoch nor in a later one.
    private static func unread(_ epochs: [Pending]) -> [Int] {
        let bs = Int64(Fingerprint.blockSize)
        var out: [Int] = []
        for (j, epoch) in epochs.enumerated() {
            for extent in epoch.extents {
                let first = Int(extent.offset / bs)
                let end = Int((extent.end + bs - 1) / bs)
                let later = epochs[(j + 1)...]
                for block in first..<end where !epoch.read[block] {
                    if later.isEmpty || !later.contains(where: { $0.read[block] }) { out.append(block) }
                }
            }
        }
        return out
    }

    public func abandon(epoch: UInt64) {
        lock.withLock { pending.removeAll { $0.epoch == epoch } }
    }

    public func invalidate(reason: String) throws {
        try SystemCalls.unlink(mapPath)
        try SystemCalls.fsyncDirectory(stateDirectory)
        lock.withLock {
            pending.removeAll()
            base = Base(map: nil, epoch: 0, volumeSize: 0, reason: .rescan(reason))
            // A new map, so the volume may move to the current function; the last scan was made with the old one.
            if fingerprinter.function != .gmac {
                fingerprinter = .fresh()
                lastScan = nil
            }
        }
    }

    // MARK: - Scanning

    /// The fingerprints of the volume now: the last scan with the hinted blocks re-read, or a full scan when there
    /// are no hints, they cannot vouch for completeness, or the volume changed size.
    private func currentContent(size: Int64, fingerprinter: BlockFingerprinter) throws -> FingerprintMap {
        let previous = lock.withLock { lastScan }
        if let hints {
            // Exactly one drain per collect: it closes the window the previous collect opened and opens the next
            // (a full scan after a nil answer starts from here as well).
            let written = try hints.drain()
            if let previous, previous.size == size, let written {
                let map = previous.map.copy()
                try refingerprint(written, size: size, into: map, fingerprinter: fingerprinter)
                lock.withLock {
                    lastScan = (map, size)
                    lastCollectWasFullScan = false
                }
                return map
            }
        }
        let map = try scan(size: size, fingerprinter: fingerprinter)
        lock.withLock {
            lastScan = hints == nil ? nil : (map, size)
            lastCollectWasFullScan = true
        }
        return map
    }

    /// Re-reads the 4 KiB blocks that `extents` touch and stores their fingerprints in `map`.
    private func refingerprint(
        _ extents: [ChangedExtent],
        size: Int64,
        into map: FingerprintMap,
        fingerprinter: BlockFingerprinter
    ) throws {
        let bs = Int64(Fingerprint.blockSize)
        var blocks: [(first: Int64, end: Int64)] = []
        for e in extents.sorted(by: { $0.offset < $1.offset }) {
            let first = max(0, e.offset / bs)
            let end = min((e.offset + e.length + bs - 1) / bs, (size + bs - 1) / bs)
            guard first < end else { continue }
            if let last = blocks.last, first <= last.end {
                blocks[blocks.count - 1].end = max(last.end, end)
            } else {
                blocks.append((first, end))
            }
        }
        guard !blocks.isEmpty else { return }
        let chunkBlocks = Int64(options.chunkSize) / bs
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: options.chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        for run in blocks {
            var block = run.first
            while block < run.end {
                let count = min(chunkBlocks, run.end - block)
                let offset = block * bs
                let want = Int(min(count * bs, size - offset))
                dropCache(offset: offset, length: Int64(want))
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want])
                let got = try SystemCalls.preadFully(device, into: target, at: offset, path: path)
                guard got == want else { throw shrankWhileReading(at: offset + Int64(got)) }
                for i in 0..<Int(count) {
                    let start = i * Fingerprint.blockSize
                    let slice = UnsafeRawBufferPointer(rebasing: target[start..<min(start + Fingerprint.blockSize, want)])
                    map[Int(block) + i] = fingerprinter.ofPartial(slice)
                }
                block += count
            }
        }
    }

    /// Drops clean cached pages of a block device (no-op for files): see `isBlockDevice`.
    private func dropCache(offset: Int64, length: Int64) {
        guard isBlockDevice else { return }
        _ = posix_fadvise(device.rawValue, off_t(offset), off_t(length), POSIX_FADV_DONTNEED)
    }

    /// Reads the whole volume and fingerprints every block, `options.threads` chunks at a time.
    private func scan(size: Int64, fingerprinter: BlockFingerprinter) throws -> FingerprintMap {
        dropCache(offset: 0, length: 0)
        let bs = Int64(Fingerprint.blockSize)
        let map = FingerprintMap(count: Int((size + bs - 1) / bs))
        let chunk = Int64(options.chunkSize)
        let chunkCount = Int((size + chunk - 1) / chunk)
        guard chunkCount > 0 else { return map }
        let work = ScanWork(chunkCount: chunkCount)
        let workers = min(options.threads, chunkCount)
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: options.chunkSize, alignment: 4096)
            defer { buffer.deallocate() }
            while let index = work.next() {
                do {
                    try fingerprintChunk(index, size: size, buffer: buffer, into: map, fingerprinter: fingerprinter)
                } catch {
                    work.fail(error)
                    return
                }
            }
        }
        if let failure = work.failure { throw failure }
        return map
    }

    private func fingerprintChunk(
        _ index: Int,
        size: Int64,
        buffer: UnsafeMutableRawBufferPointer,
        into map: FingerprintMap,
        fingerprinter: BlockFingerprinter
    )
        throws
    {
        let bs = Fingerprint.blockSize
        let offset = Int64(index) * Int64(options.chunkSize)
        let want = Int(min(Int64(options.chunkSize), size - offset))
        let first = Int(offset / Int64(bs))
        // A sparse image file: its holes read as zeros without reading them (SEEK_DATA/SEEK_HOLE); only the
        // data ranges are read and hashed.
        if !isBlockDevice, let ranges = try dataRanges(offset: offset, length: want) {
            var covered = 0
            for range in ranges {
                for block in (covered / bs)..<(range.lowerBound / bs) { map[first + block] = fingerprinter.zero }
                let got = try SystemCalls.preadFully(
                    device,
                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[range]),
                    at: offset + Int64(range.lowerBound),
                    path: path
                )
                guard got == range.count else { throw shrankWhileReading(at: offset + Int64(range.lowerBound + got)) }
                hashBlocks(
                    buffer,
                    from: range.lowerBound,
                    to: range.upperBound,
                    first: first,
                    into: map,
                    fingerprinter: fingerprinter
                )
                covered = range.upperBound
            }
            let blocks = (want + bs - 1) / bs
            for block in ((covered + bs - 1) / bs)..<blocks { map[first + block] = fingerprinter.zero }
            return
        }
        let got = try SystemCalls.preadFully(
            device,
            into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]),
            at: offset,
            path: path
        )
        guard got == want else { throw shrankWhileReading(at: offset + Int64(got)) }
        hashBlocks(buffer, from: 0, to: want, first: first, into: map, fingerprinter: fingerprinter)
    }

    /// Fingerprints the blocks of `buffer[from..<to]` (block aligned; `to` may be the chunk's partial end).
    private func hashBlocks(
        _ buffer: UnsafeMutableRawBufferPointer,
        from: Int,
        to: Int,
        first: Int,
        into map: FingerprintMap,
        fingerprinter: BlockFingerprinter
    ) {
        let bs = Fingerprint.blockSize
        let padded = (to + bs - 1) / bs * bs
        if padded > to {
            UnsafeMutableRawBufferPointer(rebasing: buffer[to..<padded]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        let raw = UnsafeRawBufferPointer(buffer)
        for i in (from / bs)..<(padded / bs) {
            map[first + i] = fingerprinter.of(UnsafeRawBufferPointer(rebasing: raw[(i * bs)..<((i + 1) * bs)]))
        }
    }

    /// The data ranges of `[offset, offset + length)` of a regular file, relative to `offset`, widened to 4 KiB
    /// blocks and merged; nil when the filesystem cannot tell (then everything is read).
    private func dataRanges(offset: Int64, length: Int) throws -> [Range<Int>]? {
        let bs = Fingerprint.blockSize
        let end = offset + Int64(length)
        var ranges: [Range<Int>] = []
        var position = offset
        while position < end {
            let data = lseek(device.rawValue, off_t(position), 3 /* SEEK_DATA */)
            if data < 0 {
                guard errno == ENXIO else { return nil }
                // ENXIO: nothing but a hole up to the end of the file — or the file shrank under us.
                try checkNotShrunk(below: end)
                break
            }
            if Int64(data) >= end { break }
            var hole = Int64(lseek(device.rawValue, off_t(data), 4 /* SEEK_HOLE */))
            if hole < 0 { return nil }
            hole = min(hole, end)
            let lower = Int(Int64(data) - offset) / bs * bs
            let upper = min(length, (Int(hole - offset) + bs - 1) / bs * bs)
            if let last = ranges.last, lower <= last.upperBound {
                ranges[ranges.count - 1] = last.lowerBound..<max(last.upperBound, upper)
            } else {
                ranges.append(lower..<upper)
            }
            position = hole
        }
        return ranges
    }

    /// The ranges of the volume that may hold data: a sparse file's data ranges (4 KiB aligned), else all of it.
    private func possibleData(size: Int64) throws -> [ChangedExtent] {
        guard size > 0 else { return [] }
        if !isBlockDevice, size <= Int64(Int.max), let ranges = try dataRanges(offset: 0, length: Int(size)) {
            return ranges.map { ChangedExtent(offset: Int64($0.lowerBound), length: Int64($0.count)) }
        }
        return [ChangedExtent(offset: 0, length: size)]
    }

    /// Throws `tracker.volume-shrank` when the file now ends before `end`.
    private func checkNotShrunk(below end: Int64) throws {
        var info = stat()
        guard fstat(device.rawValue, &info) == 0 else { return }
        if Int64(info.st_size) < end { throw shrankWhileReading(at: Int64(info.st_size)) }
    }

    /// The blocks whose fingerprint differs from the base (a block the base lacks counts as zeros), coalesced.
    static func differences(
        _ map: FingerprintMap,
        _ base: FingerprintMap?,
        volumeSize: Int64,
        zero: Fingerprint
    ) -> [ChangedExtent] {
        let bs = Int64(Fingerprint.blockSize)
        let baseCount = base?.count ?? 0
        var extents: [ChangedExtent] = []
        var runStart = -1
        func close(_ end: Int) {
            let offset = Int64(runStart) * bs
            extents.append(ChangedExtent(offset: offset, length: min(Int64(end) * bs, volumeSize) - offset))
            runStart = -1
        }
        for block in 0..<map.count {
            let old = block < baseCount ? base![block] : zero
            if map[block] != old {
                if runStart < 0 { runStart = block }
            } else if runStart >= 0 {
                close(block)
            }
        }
        if runStart >= 0 { close(map.count) }
        return extents
    }

    // MARK: - Errors

    private func unknownEpoch(_ epoch: UInt64) -> LifeboatError {
        LifeboatError(
            "tracker.unknown-epoch",
            "epoch \(epoch) of volume \(volume) is not outstanding (never collected, abandoned, superseded, or from "
                + "before a restart): collect again"
        )
    }

    private func shrankWhileReading(at offset: Int64) -> LifeboatError {
        LifeboatError(
            "tracker.volume-shrank",
            "volume \(volume) (\(path)) ended at \(offset) bytes while being read: it shrank; collect again"
        )
    }
}

/// Hands out chunk indexes to scan workers and keeps the first failure.
private final class ScanWork: @unchecked Sendable {
    private let lock = PlainLock()
    private let chunkCount: Int
    private var nextIndex = 0
    private(set) var failure: (any Error)?

    init(chunkCount: Int) { self.chunkCount = chunkCount }

    func next() -> Int? {
        lock.withLock {
            guard failure == nil, nextIndex < chunkCount else { return nil }
            defer { nextIndex += 1 }
            return nextIndex
        }
    }

    func fail(_ error: any Error) {
        lock.withLock { if failure == nil { failure = error } }
    }
}

/// One bit per block: which blocks of an epoch `read` delivered. Guarded by the tracker's lock.
final class BlockMarks: @unchecked Sendable {
    let count: Int
    private var words: [UInt64]

    init(count: Int) {
        self.count = count
        words = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    func mark(_ blocks: Range<Int>) {
        for block in blocks where block < count { words[block >> 6] |= 1 << UInt64(block & 63) }
    }

    subscript(block: Int) -> Bool { block < count && words[block >> 6] & (1 << UInt64(block & 63)) != 0 }
}
