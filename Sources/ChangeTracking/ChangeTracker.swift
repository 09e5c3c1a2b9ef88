// How an agent learns which blocks of a volume changed, so that only differences travel.
//
// The agent talks to a `ChangeTracker` and nothing else: it calls `collect()`, reads and sends the extents of
// the returned `ChangeSet` (through `read(_:epoch:into:)`), and once the replication server says the new state
// is durable it calls `acknowledge(epoch:)`. Until then the tracker remembers everything, across restarts and
// crashes: a change is forgotten only after the server acknowledged it.
//
// Trackers:
//
// - `ScanTracker` (here): reads the whole volume, fingerprints every 4 KiB block and compares with a persistent
//   fingerprint map. Needs nothing from the kernel; costs one sequential read of the volume per collect.
//
// - An eBPF tracker (later) implements the same protocol without reading the volume:
//   * A BPF program on the `block:block_rq_complete` tracepoint (or `block_bio_complete`) filters on the
//     volume's `dev_t`, keeps only completed writes (`rwbs` contains `W`, also discards and write-zeroes), and
//     sets bits `sector*512/4096 ..< (sector*512 + nr_sector*512 + 4095)/4096` in a BPF array map used as a
//     bitmap (one bit per 4 KiB block; 64 KiB per 2 GiB). Requests that miss the map (an update failed, the
//     program was not attached yet) increment a per-CPU drop counter.
//   * `collect()` swaps the live bitmap for a fresh one (two maps and an index, or `bpf_map_lookup_and_delete`
//     per word) and keeps what it swapped out as `delta[epoch]`. It reports the union of every delta since the
//     acknowledged epoch, coalesced into `ChangedExtent`s: cumulative by construction.
//   * `read(_:epoch:into:)` is a plain pread: a write that lands after the swap sets a bit in the live bitmap,
//     so it is reported by the next collect.
//   * `acknowledge(epoch: k)` drops `delta[...k]` and persists the union of the remaining deltas with the epoch
//     (tmp, fsync, rename); `abandon` drops nothing. A clean shutdown also persists the live bitmap.
//   * Anything that can make the bitmap incomplete turns into `ChangeSet.Reason.rescan(why)`: a non-zero drop
//     counter, the program detached or the agent restarted without a clean-shutdown marker (writes while no
//     program was attached are invisible), a changed volume size, or an unreadable state file. Like `ScanTracker`'s,
//     that rescan reports the whole volume from base epoch 0, so the rest of the agent never needs to know
//     which tracker runs. Its acknowledge must also keep reported blocks the agent never read (a part of an
//     initial sync) as changed.

/// A byte range of a volume that changed: 4 KiB aligned; the last extent of a volume whose size is not a
/// multiple of 4 KiB ends at the volume size.
public struct ChangedExtent: Sendable, Hashable, CustomStringConvertible {
    public var offset: Int64
    public var length: Int64

    public init(offset: Int64, length: Int64) {
        self.offset = offset
        self.length = length
    }

    public var end: Int64 { offset + length }

    public var description: String { "[\(offset), \(end))" }
}

/// What changed in a volume since the state the receiver acknowledged last.
///
/// The receiver builds the new state of the volume from the state it acknowledged as `baseEpoch` (epoch 0: an
/// empty, all-zero volume), resized to `volumeSize` (growth reads as zeros), with the bytes of `extents`
/// written over it. It must build on `baseEpoch`, not on whatever it received last: a change set the agent
/// sent but never saw acknowledged (a crash, a lost acknowledgement) is not part of the base, and a block that
/// changed there and then changed back is not in `extents`.
public struct ChangeSet: Sendable {
    /// Why the tracker reports what it reports.
    public enum Reason: Sendable, Hashable, CustomStringConvertible {
        /// The tracker has no state for this volume (first run): `baseEpoch` is 0, `extents` cover every block
        /// that is not all zero (and may cover zero blocks too: a scan-free first collect reports data ranges).
        case initialSync
        /// The usual case: `extents` are the blocks that differ from the acknowledged state `baseEpoch`.
        case incremental
        /// The tracking state was lost or cannot be trusted (the reason says why): `baseEpoch` is 0 (the
        /// receiver starts from an empty volume) and `extents` cover every block that may hold data, so the
        /// change set is correct whatever the receiver held.
        case rescan(String)

        public var description: String {
            switch self {
            case .initialSync: "initial sync"
            case .incremental: "incremental"
            case .rescan(let why): "rescan: \(why)"
            }
        }
    }

    /// Names this change set; unique for the tracker's state (never reused, also across restarts), increasing.
    public var epoch: UInt64
    /// The acknowledged state these extents apply to; 0 for an empty volume (initial sync and rescan).
    public var baseEpoch: UInt64
    /// The size of the volume when it was collected.
    public var volumeSize: Int64
    /// Changed ranges, sorted, non-overlapping, adjacent blocks coalesced into one extent.
    public var extents: [ChangedExtent]
    public var reason: Reason

    public init(epoch: UInt64, baseEpoch: UInt64, volumeSize: Int64, extents: [ChangedExtent], reason: Reason) {
        self.epoch = epoch
        self.baseEpoch = baseEpoch
        self.volumeSize = volumeSize
        self.extents = extents
        self.reason = reason
    }

    /// The number of bytes the extents cover.
    public var changedBytes: Int64 { extents.reduce(0) { $0 + $1.length } }

    /// Whether nothing changed (the receiver may still need `volumeSize` if the volume grew with zeros).
    public var isEmpty: Bool { extents.isEmpty }
}

/// Tells which blocks of one volume changed since the state the receiver acknowledged last.
///
/// The contract, for every tracker:
///
/// - `collect()` returns everything that changed since the last acknowledged epoch. It may be called again
///   before anything is acknowledged: each call is cumulative (a superset of what an earlier unacknowledged call
///   reported, plus whatever changed since), so nothing is lost when a transfer fails.
/// - The agent reads the data of the extents with `read(_:epoch:into:)`, not behind the tracker's back: a
///   content-based tracker records what was actually read, so a block that changes between `collect` and the
///   read (and perhaps back again later) is never mistaken for one the receiver already has.
/// - `acknowledge(epoch:)` is called when the receiver made that epoch durable. The tracker then forgets those
///   changes durably: it returns only after its new state reached stable storage. The receiver may have got
///   only part of the extents (a long initial sync lands in several commits): what the agent read was sent,
///   and what it did not read stays changed — the next `collect` reports it again. (A part is cut from the
///   change set of `collect()`, with no rounds after it.) Acknowledging an epoch also
///   retires every older one; acknowledging an epoch at or below the acknowledged one is a no-op (duplicates
///   are harmless).
/// - After a crash or restart before an acknowledgement, the next `collect` reports those changes again.
/// - `abandon(epoch:)` says the transfer of that epoch failed or was dropped: the tracker may free what it kept
///   for it; the changes stay pending and the next `collect` reports them again.
///
/// Calls may come from any thread. `collect` calls do not overlap (a second concurrent call fails with
/// `tracker.busy`); `read` may run on several threads at once.
public protocol ChangeTracker: AnyObject, Sendable {
    /// The volume's identifier (what the agent and server call it).
    var volume: String { get }

    /// Everything that changed since the last acknowledged epoch, under a new epoch.
    func collect() throws -> ChangeSet

    /// What changed since the agent read the extents of the outstanding epoch `epoch`, under a new epoch.
    ///
    /// For a capture in rounds: the receiver applies the extents of `epoch` and then these to the same base,
    /// all in one commit, so the returned change set has `epoch`'s `baseEpoch` and reason, and acknowledging
    /// the new epoch retires `epoch` as well. Every extent of `epoch` must have been read before this call.
    /// Called while the machine's filesystems are frozen, it must be quick for the eBPF tracker (a bitmap swap)
    /// and costs a full scan for `ScanTracker`. Throws `tracker.unknown-epoch` when `epoch` is not outstanding.
    func collect(since epoch: UInt64) throws -> ChangeSet

    /// Reads `extent` (4 KiB aligned, inside the volume as collected for `epoch`) into the first
    /// `extent.length` bytes of `buffer`. Throws `tracker.unknown-epoch` when the epoch was acknowledged,
    /// abandoned or never collected.
    func read(_ extent: ChangedExtent, epoch: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws

    /// The receiver made `epoch` durable: forget its changes, durably, before returning.
    func acknowledge(epoch: UInt64) throws

    /// The transfer of `epoch` will not complete: its changes stay pending.
    func abandon(epoch: UInt64)

    /// The receiver no longer holds the acknowledged state (pruned, lost): forget it, durably, so that the
    /// next `collect` reports a rescan (the whole volume from base epoch 0). Outstanding epochs are dropped.
    func invalidate(reason: String) throws
}
