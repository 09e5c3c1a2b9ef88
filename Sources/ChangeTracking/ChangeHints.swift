/// Where a volume may have been written, from a source cheaper than reading it — the kernel's block layer seen
/// through eBPF (`BPFTraceHints` in the agent). A `ScanTracker` given hints re-reads only the hinted blocks
/// instead of the whole volume, and falls back to a full scan whenever the hints cannot vouch for completeness.
///
/// The contract: `drain()` returns every byte range of the volume written (completed at the device) since the
/// previous `drain()` — a superset is fine, a missed write is not — or nil when that cannot be guaranteed
/// (the hint source just started, restarted, lost events or overflowed). After a nil the tracker scans the whole
/// volume; the window of the next `drain()` starts at the nil one.
public protocol ChangeHints: AnyObject, Sendable {
    func drain() throws -> [ChangedExtent]?
}
