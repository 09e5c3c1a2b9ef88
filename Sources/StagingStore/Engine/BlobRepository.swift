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

    /// Adds the entries of one index file or pack directory.
    func register(pack name: [UInt8], entries list: [BlobEntry]) {
        lock.withLock {
            let n = number(forPack: name)
            for e in list {
                entries[e.id] = BlobLocation(
                    pack: n,
                    offset: e.offset,
                    length: e.length,
                    rawLength: e.rawLength,
                    compressed: e.compressed,
                    kind: e.kind
                )
            }
        }
    }

    /// A snapshot of all entries grouped by pack, for index consolidation, GC and verify.
    func allEntriesByPack() -> [(name: [UInt8], entries: [BlobEntry])] {
        lock.withLock {
            var groups: [UInt32: [BlobEntry]] = [:]
            for (id, loc) in entries {
                groups[loc.pack, default: []].append(
                    BlobEntry(
                        id: id,
                        kind: loc.kind,
                        offset: loc.offset,
                        length: loc.length,
                        rawLength: loc.rawLength,
                        compressed: loc.compressed
                    )
                )
            }
            return groups.keys.sorted().map { (packNames[Int($0)], groups[$0]!.sorted { $0.offset < $1.offset }) }
        }
    }

    /// Replaces the whole index (after GC).
    func replaceAll(with groups: [(name: [UInt8], entries: [BlobEntry])]) {
        lock.withLock {
            entries.removeAll()
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
        let sealed = try cipher.seal(body, kind: kind, context: id.bytes)
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
    func storeSealed(_ id: BlobID, kind: BlobKind, sealed: Data, rawLength: Int, compressed: Bool) throws -> Int {
        try lock.withLock { () throws -> Int in
            if entries[id] != nil || reserved.contains(id) { return 0 }
            reserved.insert(id)
            try appendLocked(sealed, id: id, kind: kind, rawLength: rawLength, compressed: compressed)
            return sealed.count
        }
    }

    /// Copies an already sealed blob into the current pack (garbage collection moves live blobs so).
    func copySealed(_ sealed: [UInt8], entry: BlobEntry) throws {
        try lock.withLock { () throws in
            try appendLocked(
                Data(sealed),
                id: entry.id,
                kind: entry.kind,
                rawLength: Int(entry.rawLength),
                compressed: entry.compressed
            )
        }
    }

    private func appendLocked(_ sealed: Data, id: BlobID, kind: BlobKind, rawLength: Int, compressed: Bool)
        throws
    {
        if currentPack == nil {
            let name = SystemCalls.randomBytes(16)
            let writer = try backend.create(.pack, hexString(name))
            try PackFormat.header.withUnsafeBytes { (buf) throws in try writer.append(buf) }
            currentPack = (number(forPack: name), writer, [])
        }
        let offset = currentPack!.writer.bytesWritten
        try sealed.withUnsafeBytes { (buf) throws in try currentPack!.writer.append(buf) }
        currentPack!.entries.append(
            BlobEntry(
                id: id,
                kind: kind,
                offset: UInt32(offset),
                length: UInt32(sealed.count),
                rawLength: UInt32(rawLength),
                compressed: compressed
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
        for e in pack.entries {
            entries[e.id] = BlobLocation(
                pack: pack.number,
                offset: e.offset,
                length: e.length,
                rawLength: e.rawLength,
                compressed: e.compressed,
                kind: e.kind
            )
        }
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
                for e in pack.entries { entries[e.id] = nil }
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
                for e in pack.entries { entries[e.id] = nil }
            }
            packsOfThisCommit = []
            reserved.removeAll()
        }
    }
}
