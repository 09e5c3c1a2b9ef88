#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import LifeboatCore
import LifeboatSystem

/// The blobs of a store: the in-memory index (id → pack, offset, length), reading blobs back, and writing
/// new ones into packs. Thread-safe: many readers and writers may call it at once.
final class BlobRepository: @unchecked Sendable {
    let backend: any StoreBackend
    let cipher: BlobCipher
    private let lock = PlainLock()
    private var entries: [BlobID: BlobLocation] = [:]
    private var packNames: [[UInt8]] = []
    private var packNumbers: [[UInt8]: UInt32] = [:]
    private var readers: [UInt32: any ObjectReader] = [:]

    // Writing state (used by one commit at a time).
    private var reserved = Set<BlobID>()
    private var currentPack: (number: UInt32, writer: any ObjectWriter, entries: [BlobEntry])?
    private var packsOfThisCommit: [(name: [UInt8], entries: [BlobEntry])] = []

    init(backend: any StoreBackend, cipher: BlobCipher) {
        self.backend = backend
        self.cipher = cipher
    }

    // MARK: Index

    func location(of id: BlobID) -> BlobLocation? { lock.withLock { entries[id] } }

    func contains(_ id: BlobID) -> Bool { lock.withLock { entries[id] != nil } }

    func packName(_ number: UInt32) -> String { lock.withLock { hexString(packNames[Int(number)]) } }

    private func number(forPack name: [UInt8]) -> UInt32 {
        if let n = packNumbers[name] { return n }
        let n = UInt32(packNames.count)
        packNames.append(name)
        packNumbers[name] = n
        return n
    }

    /// Adds the entries of one index file or pack directory. A blob listed twice (a background compression
    /// copied it) keeps the copy that is not deferred; with `onlyNew`, entries of blobs already known are skipped
    /// (for index entries whose pack is missing: a copy elsewhere wins).
    func register(pack name: [UInt8], entries list: [BlobEntry], onlyNew: Bool = false) {
        lock.withLock {
            let n = number(forPack: name)
            for e in list {
                if let old = entries[e.id], onlyNew || (!old.deferred && e.deferred) { continue }
                setLocked(e.id, BlobLocation(entry: e, pack: n))
            }
        }
    }

    /// Number of deferred blobs per pack number, kept with `entries`.
    private var deferredPerPack: [UInt32: Int] = [:]

    private func setLocked(_ id: BlobID, _ location: BlobLocation?) {
        if let old = entries[id], old.deferred {
            deferredPerPack[old.pack, default: 0] -= 1
            if deferredPerPack[old.pack] == 0 { deferredPerPack[old.pack] = nil }
        }
        entries[id] = location
        if let location, location.deferred { deferredPerPack[location.pack, default: 0] += 1 }
    }

    /// Packs holding blobs stored plain to be compressed later, with every blob the index locates in them
    /// (at most `limit` packs, the most deferred first).
    func packsWithDeferredBlobs(limit: Int) -> [(name: [UInt8], entries: [BlobEntry])] {
        lock.withLock {
            let chosen = deferredPerPack.sorted { $0.value > $1.value }.prefix(limit).map(\.key)
            guard !chosen.isEmpty else { return [] }
            var groups: [UInt32: [BlobEntry]] = [:]
            for number in chosen { groups[number] = [] }
            for (id, loc) in entries where groups[loc.pack] != nil { groups[loc.pack]!.append(BlobEntry(id: id, location: loc)) }
            return chosen.map { (packNames[Int($0)], groups[$0]!.sorted { $0.offset < $1.offset }) }
        }
    }

    /// Number of blobs waiting for background compression.
    var deferredBlobCount: Int { lock.withLock { deferredPerPack.values.reduce(0, +) } }

    /// Names of the packs the index locates at least one blob in.
    func packsHoldingBlobs() -> Set<[UInt8]> {
        lock.withLock { Set(Set(entries.values.map(\.pack)).map { packNames[Int($0)] }) }
    }

    /// A snapshot of all entries grouped by pack, for index consolidation, GC and verify.
    func allEntriesByPack() -> [(name: [UInt8], entries: [BlobEntry])] {
        lock.withLock {
            var groups: [UInt32: [BlobEntry]] = [:]
            for (id, loc) in entries {
                groups[loc.pack, default: []].append(BlobEntry(id: id, location: loc))
            }
            return groups.keys.sorted().map { (packNames[Int($0)], groups[$0]!.sorted { $0.offset < $1.offset }) }
        }
    }

    /// Replaces the whole index (after GC).
    func replaceAll(with groups: [(name: [UInt8], entries: [BlobEntry])]) {
        lock.withLock {
            entries.removeAll()
            deferredPerPack.removeAll()
            readers.removeAll()
        }
        for g in groups { register(pack: g.name, entries: g.entries) }
    }

    // MARK: Reading

    private func reader(for pack: UInt32) throws -> any ObjectReader {
        if let r = lock.withLock({ readers[pack] }) { return r }
        let name = packName(pack)
        let r = try backend.open(.pack, name)
        return lock.withLock {
            if readers.count > 512 { readers.removeAll() }
            if let existing = readers[pack] { return existing }
            readers[pack] = r
            return r
        }
    }

    func dropReaders() { lock.withLock { readers.removeAll() } }

    /// Reads the sealed bytes of a blob as stored in its pack.
    func readSealed(_ loc: BlobLocation, id: BlobID) throws -> [UInt8] {
        let r = try reader(for: loc.pack)
        var sealed = [UInt8](repeating: 0, count: Int(loc.length))
        let n = try sealed.withUnsafeMutableBytes { (buf) throws -> Int in
            try r.read(at: Int64(loc.offset), into: buf)
        }
        guard n == sealed.count else {
            throw LifeboatError(
                "store.corrupt",
                "pack \(packName(loc.pack)) is truncated: blob \(id.short) at byte \(loc.offset) is missing"
            )
        }
        return sealed
    }

    /// Reads, authenticates and decompresses a blob into `destination` (which holds `rawLength` bytes).
    func read(_ id: BlobID, kind: BlobKind, into destination: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let loc = location(of: id) else {
            throw LifeboatError("store.missing-blob", "blob \(id.short) is not in the index")
        }
        guard loc.kind == kind else {
            throw LifeboatError("store.corrupt", "blob \(id.short) is a \(loc.kind) where a \(kind) was expected")
        }
        let sealed = try readSealed(loc, id: id)
        let plain: Data
        do {
            plain = try sealed.withUnsafeBytes { (buf) throws in
                try cipher.open(buf, kind: kind, context: id.bytes)
            }
        } catch {
            throw LifeboatError(
                "store.corrupt",
                "blob \(id.short) in pack \(packName(loc.pack)) at byte \(loc.offset) failed authentication",
                cause: error
            )
        }
        guard Int(loc.rawLength) <= destination.count else {
            throw LifeboatError("store.corrupt", "blob \(id.short) is larger than expected")
        }
        if loc.compressed {
            try plain.withUnsafeBytes { (src) throws in
                try Zstd.decompress(src, rawLength: Int(loc.rawLength), into: destination)
            }
        } else {
            guard plain.count == Int(loc.rawLength) else {
                throw LifeboatError("store.corrupt", "blob \(id.short) has the wrong length")
            }
            plain.withUnsafeBytes { src in destination.copyMemory(from: src) }
        }
        return Int(loc.rawLength)
    }

    func read(_ id: BlobID, kind: BlobKind) throws -> [UInt8] {
        guard let loc = location(of: id) else {
            throw LifeboatError("store.missing-blob", "blob \(id.short) is not in the index")
        }
        var out = [UInt8](repeating: 0, count: Int(loc.rawLength))
        _ = try out.withUnsafeMutableBytes { (buf) throws -> Int in try read(id, kind: kind, into: buf) }
        return out
    }

    // MARK: Writing

    /// Stores a blob unless the store already has it (or it is being stored in this commit).
    /// Compression and encryption run on the caller's thread; only the append to the pack is serialized.
    /// - Returns: the number of bytes added to the store (0 for a duplicate).
    @discardableResult
    func store(
        _ id: BlobID,
        kind: BlobKind,
        plaintext: UnsafeRawBufferPointer,
        compressor: ZstdCompressor,
        scratch: UnsafeMutableRawBufferPointer
    ) throws -> Int {
        let fresh = lock.withLock { () -> Bool in
            if entries[id] != nil || reserved.contains(id) { return false }
            reserved.insert(id)
            return true
        }
        guard fresh else { return 0 }
        let compressedLength = compressor.compress(plaintext, into: scratch)
        let body = compressedLength.map { UnsafeRawBufferPointer(rebasing: scratch[0..<$0]) } ?? plaintext
        let sealed = try cipher.sealParts(body, kind: kind, context: id.bytes)
        try lock.withLock { () throws in
            try appendLocked(
                sealed,
                id: id,
                kind: kind,
                rawLength: plaintext.count,
                compressed: compressedLength != nil
            )
        }
        return sealed.count
    }

    /// Stores a blob sealed by the caller (`seal(_:kind:context:)` with the id as context) unless the store
    /// already has it. Returns the number of bytes added (0 for a duplicate).
    /// `deferred`: the body is plain and should be compressed in the background.
    func storeSealed(_ id: BlobID, kind: BlobKind, sealed: SealedParts, rawLength: Int, compressed: Bool, deferred: Bool = false) throws -> Int {
        try lock.withLock { () throws -> Int in
            if entries[id] != nil || reserved.contains(id) { return 0 }
            reserved.insert(id)
            try appendLocked(sealed, id: id, kind: kind, rawLength: rawLength, compressed: compressed, deferred: deferred)
            return sealed.count
        }
    }

    /// Copies an already sealed blob into the current pack (garbage collection and background compression
    /// move blobs so), with the coding `entry` gives.
    func copySealed(_ sealed: [UInt8], entry: BlobEntry) throws {
        try lock.withLock { () throws in
            try appendLocked(
                SealedParts(joined: sealed),
                id: entry.id,
                kind: entry.kind,
                rawLength: Int(entry.rawLength),
                compressed: entry.compressed,
                deferred: entry.deferred
            )
        }
    }

    private func appendLocked(_ sealed: SealedParts, id: BlobID, kind: BlobKind, rawLength: Int, compressed: Bool, deferred: Bool = false)
        throws
    {
        if currentPack == nil {
            let name = SystemCalls.randomBytes(16)
            let writer = try backend.create(.pack, hexString(name))
            try PackFormat.header.withUnsafeBytes { (buf) throws in try writer.append(buf) }
            currentPack = (number(forPack: name), writer, [])
        }
        let offset = currentPack!.writer.bytesWritten
        try sealed.forEachPart { (buf) throws in try currentPack!.writer.append(buf) }
        currentPack!.entries.append(
            BlobEntry(
                id: id,
                kind: kind,
                offset: UInt32(offset),
                length: UInt32(sealed.count),
                rawLength: UInt32(rawLength),
                compressed: compressed,
                deferred: deferred
            )
        )
        if currentPack!.writer.bytesWritten >= StoreFormat.packTargetSize {
            try finishPackLocked()
        }
    }

    /// Writes the pack directory and footer, syncs, and makes the pack visible.
    private func finishPackLocked() throws {
        guard let pack = currentPack else { return }
        currentPack = nil
        let name = packNames[Int(pack.number)]
        do {
            let directory = try cipher.seal(
                PackFormat.encodeDirectory(pack.entries),
                kind: .packDirectory,
                context: Array(hexString(name).utf8)
            )
            var footer = ByteWriter()
            footer.u32(UInt32(directory.count))
            footer.raw(PackFormat.footerMagic)
            try (directory + footer.bytes).withUnsafeBytes { (buf) throws in try pack.writer.append(buf) }
            try pack.writer.finish()
        } catch {
            pack.writer.abort()
            throw error
        }
        packsOfThisCommit.append((name, pack.entries))
        for e in pack.entries { reserved.remove(e.id) }
        for e in pack.entries { setLocked(e.id, BlobLocation(entry: e, pack: pack.number)) }
    }

    /// Closes the open pack and makes its blobs readable (they stay unreferenced until a commit names them).
    func flushPack() throws {
        try lock.withLock { () throws in try finishPackLocked() }
    }

    /// Closes the open pack and returns everything written since the last call, for the commit's index file.
    func sealCommit() throws -> [(name: [UInt8], entries: [BlobEntry])] {
        try flushPack()
        return lock.withLock {
            let w = packsOfThisCommit
            packsOfThisCommit = []
            reserved.removeAll()
            return w
        }
    }

    /// Removes blobs from the in-memory index (after their commit failed).
    func forget(_ packs: [(name: [UInt8], entries: [BlobEntry])]) {
        lock.withLock {
            for pack in packs {
                for e in pack.entries { setLocked(e.id, nil) }
            }
        }
    }

    /// Drops everything written since the last `sealCommit` (after a failed commit). Finished packs stay on
    /// disk unreferenced until garbage collection.
    func abandonCommit() {
        lock.withLock {
            currentPack?.writer.abort()
            currentPack = nil
            // Blobs of packs finished in this commit are not in any index file: forget them, so that no later
            // commit deduplicates against them. GC removes the packs.
            for pack in packsOfThisCommit {
                for e in pack.entries { setLocked(e.id, nil) }
            }
            packsOfThisCommit = []
            reserved.removeAll()
        }
    }
}

extension BlobLocation {
    init(entry e: BlobEntry, pack: UInt32) {
        self.init(pack: pack, offset: e.offset, length: e.length, rawLength: e.rawLength, compressed: e.compressed, kind: e.kind, deferred: e.deferred)
    }
}

extension BlobEntry {
    init(id: BlobID, location l: BlobLocation) {
        self.init(id: id, kind: l.kind, offset: l.offset, length: l.length, rawLength: l.rawLength, compressed: l.compressed, deferred: l.deferred)
    }
}
