public import LifeboatCore
import LifeboatSystem
public import Logging

/// The staging store: every replicated volume of every machine, and every recovery point.
///
/// Open it with `Store.open` (or make one with `Store.create`). A store opened for writing holds the
/// store's write lock until `close()`; readers hold a shared lock that only garbage collection excludes.
/// All methods are synchronous and may block on disk I/O: call them from a thread pool, not from the
/// cooperative pool.
public final class Store: @unchecked Sendable {
    public enum Access: Sendable {
        case read
        case write
        /// Write access that also excludes readers: pruning and garbage collection.
        case maintenance
    }

    public let backend: any StoreBackend
    public let access: Access
    let clock: any WallClock
    let logger: Logger
    let config: StoreConfig
    let cipher: BlobCipher
    let blobs: BlobRepository
    private var locks: [any StoreLock]
    let stateLock = PlainLock()
    private var commitsByID: [PointID: CommitRecord] = [:]
    private var pinsByName: [String: Pin] = [:]
    /// Metadata objects that could not be read at open (damaged index files, commit records, pins).
    private(set) var damagedObjects: [(kind: ObjectKind, name: String, error: any Error)] = []
    var commitInProgress = false
    /// Packs whose blobs background compression copied elsewhere: deleted once nothing may still read them.
    var retiredPacks: [(name: String, since: ContinuousClock.Instant)] = []

    // MARK: Creating and opening

    /// Creates a new, empty store.
    ///
    /// - Parameters:
    ///   - backend: where the store lives; a local directory must be absent or empty.
    ///   - key: the master key. For `.keyFile`, the file is created (mode 0600) unless it exists.
    @discardableResult
    public static func create(
        at backend: LocalDirectoryBackend,
        key: MasterKeySource,
        clock: any WallClock = SystemWallClock()
    ) throws -> StoreConfigSummary {
        if try backend.readConfig() != nil {
            throw LifeboatError("store.exists", "\(backend.location) already holds a store")
        }
        var createdKeyFile: String? = nil
        if case .keyFile(let path) = key, !SystemCalls.exists(path) {
            try MasterKeyFile.create(path)
            createdKeyFile = path
        }
        do {
            // Everything that can fail on the key happens before anything is created.
            var config = StoreConfig(
                version: StoreFormat.version,
                storeID: SystemCalls.randomBytes(16),
                created: clock.now().nanoseconds,
                slots: []
            )
            let ring = KeyRing.generate()
            config.slots = [try KeySlot.make(for: key, keyRing: ring, associatedData: config.wrappingAssociatedData)]
            let existed = SystemCalls.exists(backend.location)
            try backend.createLayout()
            do {
                try backend.writeConfig(config.encoded())
            } catch {
                backend.removeEmptyLayout(removeRoot: !existed)
                throw error
            }
            return StoreConfigSummary(id: hexString(config.storeID), location: backend.location, createdKeyFile: createdKeyFile)
        } catch {
            if let createdKeyFile { try? SystemCalls.unlink(createdKeyFile) }
            throw error
        }
    }

    /// Opens a store. Checks the key before touching any data: a wrong key fails with `store.wrong-key`.
    public static func open(
        _ backend: any StoreBackend,
        key: MasterKeySource,
        access: Access = .read,
        clock: any WallClock = SystemWallClock(),
        logger: Logger = Logger(label: "lifeboat.store")
    ) throws -> Store {
        guard let configBytes = try backend.readConfig() else {
            throw LifeboatError(
                "store.not-a-store",
                "\(backend.location) is not a Lifeboat store: create one with 'lifeboat store init'"
            )
        }
        let config = try StoreConfig.decode(configBytes, location: backend.location)
        var ring: KeyRing? = nil
        for slot in config.slots where slot.matches(key) {
            if let r = try slot.unwrap(with: key, associatedData: config.wrappingAssociatedData) {
                ring = r
                break
            }
        }
        guard let ring else {
            let what: String
            switch key {
            case .keyFile(let path): what = "the key file \(path)"
            case .passphrase: what = "the passphrase"
            }
            throw LifeboatError(
                "store.wrong-key",
                "\(what) does not open the store at \(backend.location): give the key the store was created with"
            )
        }
        var locks: [any StoreLock] = []
        switch access {
        case .read:
            locks.append(try backend.lock("read", .shared))
        case .write:
            locks.append(try backend.lock("write", .exclusive))
            locks.append(try backend.lock("read", .shared))
        case .maintenance:
            locks.append(try backend.lock("write", .exclusive))
            locks.append(try backend.lock("read", .exclusive))
        }
        let store = Store(backend: backend, access: access, config: config, ring: ring, clock: clock, logger: logger, locks: locks)
        if access != .read {
            try backend.removeLeftovers()
        }
        try store.loadMetadata()
        return store
    }

    private init(
        backend: any StoreBackend,
        access: Access,
        config: StoreConfig,
        ring: KeyRing,
        clock: any WallClock,
        logger: Logger,
        locks: [any StoreLock]
    ) {
        self.backend = backend
        self.access = access
        self.config = config
        self.cipher = BlobCipher(keys: ring)
        self.blobs = BlobRepository(backend: backend, cipher: cipher)
        self.clock = clock
        self.logger = logger
        self.locks = locks
    }

    /// Releases the store's locks. The store must not be used afterwards.
    public func close() {
        blobs.dropReaders()
        for lock in locks { lock.release() }
        locks = []
    }

    deinit { for lock in locks { lock.release() } }

    func requireWrite() throws {
        guard access != .read else {
            throw LifeboatError("store.read-only", "the store was opened read-only")
        }
    }

    // MARK: Metadata

    private func loadMetadata() throws {
        var damaged: [(kind: ObjectKind, name: String, error: any Error)] = []
        let indexNames = try backend.list(.index).sorted()
        let existingPacks = Set(try backend.list(.pack))
        var listedPacks: [[UInt8]] = []
        var missing: [(name: [UInt8], entries: [BlobEntry])] = []
        for name in indexNames {
            do {
                let sealed = try backend.get(.index, name)
                let plain = try cipher.open(sealed, kind: .indexFile, context: Array(name.utf8))
                for pack in try IndexFormat.decode(plain, name: name) {
                    // A blob background compression copied is listed twice; the copy in an existing pack wins.
                    if existingPacks.contains(hexString(pack.name)) {
                        blobs.register(pack: pack.name, entries: pack.entries)
                        listedPacks.append(pack.name)
                    } else {
                        missing.append(pack)
                    }
                }
            } catch {
                logger.error("index file is damaged", metadata: ["file": "\(name)", "error": "\(error)"])
                damaged.append((.index, name, error))
            }
        }
        // Entries of missing packs stay known (reading them reports the missing pack) unless a copy exists.
        for pack in missing { blobs.register(pack: pack.name, entries: pack.entries, onlyNew: true) }
        // Packs every blob of which was copied by background compression before a restart: delete them later.
        if access != .read {
            let now = ContinuousClock.now
            let holding = blobs.packsHoldingBlobs()
            for name in Set(listedPacks) where !holding.contains(name) { retiredPacks.append((hexString(name), now)) }
        }
        var commits: [PointID: CommitRecord] = [:]
        for name in try backend.list(.commit) {
            do {
                let sealed = try backend.get(.commit, name)
                let plain = try cipher.open(sealed, kind: .commit, context: Array(name.utf8))
                let record = try CommitRecord.decode(plain, name: name)
                commits[record.id] = record
            } catch {
                logger.error("commit record is damaged", metadata: ["file": "\(name)", "error": "\(error)"])
                damaged.append((.commit, name, error))
            }
        }
        var pins: [String: Pin] = [:]
        for name in try backend.list(.pin) {
            do {
                let sealed = try backend.get(.pin, name)
                let plain = try cipher.open(sealed, kind: .pin, context: Array(name.utf8))
                pins[name] = try Pin.decode(plain, name: name)
            } catch {
                damaged.append((.pin, name, error))
            }
        }
        stateLock.withLock {
            commitsByID = commits
            pinsByName = pins
            damagedObjects = damaged
        }
    }

    func recordCommit(_ record: CommitRecord) {
        stateLock.withLock { commitsByID[record.id] = record }
    }

    func forgetCommit(_ id: PointID) {
        stateLock.withLock { _ = commitsByID.removeValue(forKey: id) }
    }

    // MARK: Points

    /// All commits, oldest first (by time, then sequence).
    public func commits(machine: String? = nil) -> [CommitRecord] {
        stateLock.withLock {
            commitsByID.values.filter { machine == nil || $0.machine == machine }
                .sorted { ($0.time, $0.sequence, $0.id) < ($1.time, $1.sequence, $1.id) }
        }
    }

    public func machines() -> [String] {
        stateLock.withLock { Set(commitsByID.values.map(\.machine)).sorted() }
    }

    public func commit(_ id: PointID) -> CommitRecord? {
        stateLock.withLock { commitsByID[id] }
    }

    /// The newest commit of a machine.
    public func latest(machine: String) -> CommitRecord? {
        stateLock.withLock {
            commitsByID.values.filter { $0.machine == machine }.max { ($0.sequence, $0.time) < ($1.sequence, $1.time) }
        }
    }

    /// Resolves `latest`, a point id, or an RFC 3339 time (newest point at or before it, the time taken to the end
    /// of its written precision: `…:17.043Z` includes 17.043999999) for a machine.
    /// `latest` and times consider crash-consistent points only; an id names any commit.
    public func resolvePoint(_ text: String, machine: String) throws -> CommitRecord {
        let all = commits(machine: machine)
        let mine = all.filter(\.crashConsistent)
        if !all.isEmpty && mine.isEmpty && PointID(text) == nil {
            throw LifeboatError(
                "store.no-consistent-point",
                "machine '\(machine)' has \(all.count) commits but none is crash-consistent yet; name one by its id to read it anyway"
            )
        }
        guard !all.isEmpty else {
            let known = machines()
            throw LifeboatError(
                "store.unknown-machine",
                "machine '\(machine)' has no recovery points in this store"
                    + (known.isEmpty ? "" : " (machines: \(known.joined(separator: ", ")))")
            )
        }
        if text == "latest" { return mine.max { ($0.sequence, $0.time) < ($1.sequence, $1.time) }! }
        if let id = PointID(text) {
            guard let c = commit(id), c.machine == machine else {
                throw LifeboatError(
                    "store.unknown-point",
                    "point \(text) does not exist for machine '\(machine)': list points with 'lifeboat store points --machine \(machine)'"
                )
            }
            return c
        }
        if let given = Timestamp(rfc3339: text) {
            // A time copied from a listing (milliseconds) covers its whole millisecond.
            let time = Timestamp(nanoseconds: given.nanoseconds + Timestamp.resolution(ofRFC3339: text) - 1)
            guard let c = mine.last(where: { $0.time <= time }) else {
                throw LifeboatError(
                    "store.unknown-point",
                    "machine '\(machine)' has no point at or before \(text); its oldest is \(mine[0].time)"
                )
            }
            return c
        }
        throw LifeboatError(
            "store.bad-point",
            "'\(text)' is not a point: give 'latest', a 16-digit point id, or an RFC 3339 time like 2026-11-30T03:25:00Z"
        )
    }

    // MARK: Pins

    public func pins() -> [Pin] { stateLock.withLock { Array(pinsByName.values) } }

    /// Keeps a point from retention until `unpin`.
    @discardableResult
    public func pin(_ point: PointID, holder: String) throws -> Pin {
        try requireWrite()
        guard commit(point) != nil else {
            throw LifeboatError("store.unknown-point", "point \(point) does not exist")
        }
        let name = hexString(SystemCalls.randomBytes(16))
        let pin = Pin(name: name, point: point, holder: holder, since: clock.now())
        try backend.put(.pin, name, try cipher.seal(pin.encoded(), kind: .pin, context: Array(name.utf8)))
        try backend.barrier()
        stateLock.withLock { pinsByName[name] = pin }
        return pin
    }

    /// Removes every pin of `holder` on `point`.
    public func unpin(_ point: PointID, holder: String) throws {
        try requireWrite()
        let matching = stateLock.withLock { pinsByName.values.filter { $0.point == point && $0.holder == holder } }
        for pin in matching { try backend.delete(.pin, pin.name) }
        try backend.barrier()
        stateLock.withLock { for pin in matching { pinsByName[pin.name] = nil } }
    }

    var pinnedPoints: Set<PointID> { stateLock.withLock { Set(pinsByName.values.map(\.point)) } }
}

/// What `create` made.
public struct StoreConfigSummary: Sendable {
    public var id: String
    public var location: String
    public var createdKeyFile: String?
}
