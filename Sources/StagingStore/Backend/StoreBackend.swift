import LifeboatCore

/// The kinds of object a store keeps. Each kind is a namespace of opaque hex names.
public enum ObjectKind: String, Sendable, CaseIterable {
    case pack = "packs"
    case index = "index"
    case commit = "commits"
    case pin = "pins"
}

public enum LockMode: Sendable {
    case shared
    case exclusive
}

/// Where a store's objects live: a local directory now, S3-compatible object storage later.
///
/// Objects are immutable once written. Durability is explicit: after `barrier()` returns, every object
/// put or finished and every delete made before it survives a crash (on a local disk: fsync of the files
/// and of the directories holding them). Nothing is ever half visible: an object appears under its name
/// complete or not at all.
public protocol StoreBackend: Sendable {
    /// A short description for messages, such as the directory path.
    var location: String { get }

    /// The store's configuration object, or nil when there is none (not a store).
    func readConfig() throws -> [UInt8]?
    /// Replaces the configuration object atomically and durably.
    func writeConfig(_ bytes: [UInt8]) throws

    /// Writes a whole object. Durable after the next `barrier()`.
    func put(_ kind: ObjectKind, _ name: String, _ bytes: [UInt8]) throws
    /// Starts a streaming object (a pack). It becomes visible and durable-after-barrier on `finish()`.
    func create(_ kind: ObjectKind, _ name: String) throws -> any ObjectWriter
    /// Reads a whole object.
    func get(_ kind: ObjectKind, _ name: String) throws -> [UInt8]
    /// Opens an object for positional reads.
    func open(_ kind: ObjectKind, _ name: String) throws -> any ObjectReader
    /// Names of all objects of a kind.
    func list(_ kind: ObjectKind) throws -> [String]
    /// Size of an object in bytes.
    func size(_ kind: ObjectKind, _ name: String) throws -> Int64
    /// Removes an object; removing a missing object is not an error. Durable after the next `barrier()`.
    func delete(_ kind: ObjectKind, _ name: String) throws
    /// Makes everything written or deleted so far durable.
    func barrier() throws
    /// Takes a named advisory lock; fails at once with `store.locked` when another process holds it.
    func lock(_ name: String, _ mode: LockMode) throws -> any StoreLock
    /// Removes leftovers of interrupted writes. Only a writer holding the exclusive write lock calls it.
    func removeLeftovers() throws
}

/// A streaming object being written.
public protocol ObjectWriter: AnyObject {
    var bytesWritten: Int64 { get }
    func append(_ bytes: UnsafeRawBufferPointer) throws
    /// Completes the object: flushed and visible under its name; durable after the next `barrier()`.
    func finish() throws
    /// Drops the object; nothing of it remains visible.
    func abort()
}

/// An object opened for positional reads. Safe to use from several threads at once.
public protocol ObjectReader: AnyObject, Sendable {
    var size: Int64 { get }
    /// Reads up to `buffer.count` bytes at `offset`; returns how many were read (fewer only at the end).
    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// A held lock; released by `release()` or when the process ends.
public protocol StoreLock: AnyObject, Sendable {
    func release()
}
