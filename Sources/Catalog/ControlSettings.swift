public import LifeboatCore

/// The control plane's settings, changed by admins, stored as JSON under the key `control`. Decoding takes the
/// default for every key that is missing, so settings written by an older Lifeboat still read.
public struct ControlSettings: Codable, Sendable, Equatable {
    /// A RECOVERY launch must be made under an open incident.
    public var requireIncidentForRecovery: Bool = true
    /// Which commits are kept as recovery points.
    public var pitPolicy: RetentionPolicy = .default
    /// Launch settings for machines that have none of their own.
    public var defaultLaunchSettings: LaunchSettings? = nil
    /// A machine whose last passed drill is older than this shows as TEST_OVERDUE.
    public var drillOverdueDays: Int = 30
    /// How long a sign-in lasts.
    public var sessionHours: Int = 12
    /// Failed sign-ins in a row before the name is locked out for `lockoutSeconds`.
    public var loginFailuresBeforeLockout: Int = 5
    public var lockoutSeconds: Int = 300

    public init(
        requireIncidentForRecovery: Bool = true,
        pitPolicy: RetentionPolicy = .default,
        defaultLaunchSettings: LaunchSettings? = nil,
        drillOverdueDays: Int = 30,
        sessionHours: Int = 12,
        loginFailuresBeforeLockout: Int = 5,
        lockoutSeconds: Int = 300
    ) {
        self.requireIncidentForRecovery = requireIncidentForRecovery
        self.pitPolicy = pitPolicy
        self.defaultLaunchSettings = defaultLaunchSettings
        self.drillOverdueDays = drillOverdueDays
        self.sessionHours = sessionHours
        self.loginFailuresBeforeLockout = loginFailuresBeforeLockout
        self.lockoutSeconds = lockoutSeconds
    }

    enum CodingKeys: String, CodingKey {
        case requireIncidentForRecovery, pitPolicy, defaultLaunchSettings, drillOverdueDays, sessionHours,
            loginFailuresBeforeLockout, lockoutSeconds
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = ControlSettings()
        requireIncidentForRecovery =
            try c.decodeIfPresent(Bool.self, forKey: .requireIncidentForRecovery) ?? d.requireIncidentForRecovery
        pitPolicy = try c.decodeIfPresent(RetentionPolicy.self, forKey: .pitPolicy) ?? d.pitPolicy
        defaultLaunchSettings = try c.decodeIfPresent(LaunchSettings.self, forKey: .defaultLaunchSettings)
        drillOverdueDays = try c.decodeIfPresent(Int.self, forKey: .drillOverdueDays) ?? d.drillOverdueDays
        sessionHours = try c.decodeIfPresent(Int.self, forKey: .sessionHours) ?? d.sessionHours
        loginFailuresBeforeLockout =
            try c.decodeIfPresent(Int.self, forKey: .loginFailuresBeforeLockout) ?? d.loginFailuresBeforeLockout
        lockoutSeconds = try c.decodeIfPresent(Int.self, forKey: .lockoutSeconds) ?? d.lockoutSeconds
    }

    /// Checks every field; the error names the field and the values it accepts.
    ///
    /// - Throws: `settings.invalid`.
    public func validate() throws {
        do {
            try pitPolicy.validate()
        } catch let error as LifeboatError {
            throw LifeboatError("settings.invalid", "pitPolicy: \(error.message)", cause: error)
        }
        if let defaultLaunchSettings {
            do {
                try defaultLaunchSettings.validate()
            } catch let error as LifeboatError {
                throw LifeboatError("settings.invalid", "defaultLaunchSettings: \(error.message)", cause: error)
            }
        }
        try Self.check("drillOverdueDays", drillOverdueDays, 1...3650, unit: "days")
        try Self.check("sessionHours", sessionHours, 1...(366 * 24), unit: "hours")
        try Self.check("loginFailuresBeforeLockout", loginFailuresBeforeLockout, 1...1000, unit: "failures")
        try Self.check("lockoutSeconds", lockoutSeconds, 1...(30 * 86_400), unit: "seconds")
    }

    private static func check(_ field: String, _ value: Int, _ range: ClosedRange<Int>, unit: String) throws {
        guard !range.contains(value) else { return }
        throw LifeboatError(
            "settings.invalid",
            "\(field) must be \(range.lowerBound) to \(range.upperBound) \(unit), got \(value)"
        )
    }
}
