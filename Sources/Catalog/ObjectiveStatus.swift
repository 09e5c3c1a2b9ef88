public import LifeboatCore

/// How an application stands against its recovery objectives right now.
public struct ObjectiveStatus: Sendable, Hashable {
    public var application: String
    public var rpoObjectiveSeconds: Int64?
    public var rtoObjectiveSeconds: Int64?
    /// The worst current lag of its machines (now − last consistent capture); nil when it has no machine or a
    /// machine has no consistent point yet.
    public var measuredRPOSeconds: Double?
    /// The worst, over its machines, of each machine's last passed drill RTO; nil when it has no machine or a
    /// machine never passed a drill.
    public var measuredRTOSeconds: Double?
    /// The newest last drill of its machines (passed or failed).
    public var lastDrillAt: Timestamp?
    /// measured ≤ objective; nil when the objective or the measurement is missing.
    public var rpoMet: Bool?
    public var rtoMet: Bool?
    /// Its active machines, sorted by name.
    public var machines: [MachineObjective]

    public init(
        application: String,
        rpoObjectiveSeconds: Int64?,
        rtoObjectiveSeconds: Int64?,
        measuredRPOSeconds: Double?,
        measuredRTOSeconds: Double?,
        lastDrillAt: Timestamp?,
        rpoMet: Bool?,
        rtoMet: Bool?,
        machines: [MachineObjective]
    ) {
        self.application = application
        self.rpoObjectiveSeconds = rpoObjectiveSeconds
        self.rtoObjectiveSeconds = rtoObjectiveSeconds
        self.measuredRPOSeconds = measuredRPOSeconds
        self.measuredRTOSeconds = measuredRTOSeconds
        self.lastDrillAt = lastDrillAt
        self.rpoMet = rpoMet
        self.rtoMet = rtoMet
        self.machines = machines
    }
}

/// One machine's share of its application's objectives.
public struct MachineObjective: Sendable, Hashable {
    public var machine: String
    /// now − its last consistent capture; nil without a consistent point.
    public var lagSeconds: Double?
    /// The RTO measured by its newest passed drill (a TEST launch whose item was LAUNCHED).
    public var lastDrillRTOSeconds: Double?
    /// When its last drill ended, passed or failed.
    public var lastDrillAt: Timestamp?
    /// Whether that last drill passed; nil when it was never drilled.
    public var lastDrillPassed: Bool?

    public init(
        machine: String,
        lagSeconds: Double?,
        lastDrillRTOSeconds: Double?,
        lastDrillAt: Timestamp?,
        lastDrillPassed: Bool?
    ) {
        self.machine = machine
        self.lagSeconds = lagSeconds
        self.lastDrillRTOSeconds = lastDrillRTOSeconds
        self.lastDrillAt = lastDrillAt
        self.lastDrillPassed = lastDrillPassed
    }
}
