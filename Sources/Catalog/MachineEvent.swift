public import LifeboatCore

/// One entry of the machine event log.
public struct MachineEvent: Sendable, Equatable {
    /// Increasing with every event recorded: newer events have larger ids.
    public var id: Int64
    public var time: Timestamp
    public var machine: String
    /// What happened, as an upper-case word (`ENROLLED`, `REMOVED`, `CONNECTED`, `STALLED`, …).
    public var kind: String
    /// A sentence for a person.
    public var detail: String

    public init(id: Int64, time: Timestamp, machine: String, kind: String, detail: String) {
        self.id = id
        self.time = time
        self.machine = machine
        self.kind = kind
        self.detail = detail
    }
}
