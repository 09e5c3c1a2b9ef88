/// The point-in-time (PIT) policy: which commits of a machine are kept as recovery points, and for how long.
///
/// Rules follow DRS (`unit`, `interval`, `retentionDuration`); `keepEveryCommitFor` adds the Zerto-style
/// "every commit of the last minutes". The newest commit of a machine and pinned commits are always kept.
public struct RetentionPolicy: Sendable, Hashable, Codable {
    public enum Unit: String, Sendable, Hashable, Codable, CaseIterable {
        case minute = "MINUTE"
        case hour = "HOUR"
        case day = "DAY"

        public var seconds: Int64 {
            switch self {
            case .minute: 60
            case .hour: 3600
            case .day: 86400
            }
        }
    }

    /// Keep one point per `interval` units, for `retentionDuration` units back from now.
    public struct Rule: Sendable, Hashable, Codable {
        public var unit: Unit
        public var interval: Int
        public var retentionDuration: Int
        public var enabled: Bool

        public init(unit: Unit, interval: Int, retentionDuration: Int, enabled: Bool = true) {
            self.unit = unit
            self.interval = interval
            self.retentionDuration = retentionDuration
            self.enabled = enabled
        }

        var intervalSeconds: Int64 { Int64(interval) * unit.seconds }
        var retentionSeconds: Int64 { Int64(retentionDuration) * unit.seconds }
    }

    /// Every commit younger than this many seconds is kept.
    public var keepEveryCommitFor: Int64
    public var rules: [Rule]

    public init(keepEveryCommitFor: Int64, rules: [Rule]) {
        self.keepEveryCommitFor = keepEveryCommitFor
        self.rules = rules
    }

    /// Every commit for 10 minutes, one per 10 minutes for an hour, hourly for a day, daily for 7 days.
    public static let `default` = RetentionPolicy(
        keepEveryCommitFor: 600,
        rules: [
            Rule(unit: .minute, interval: 10, retentionDuration: 60),
            Rule(unit: .hour, interval: 1, retentionDuration: 24),
            Rule(unit: .day, interval: 1, retentionDuration: 7),
        ]
    )

    /// Checks that the policy makes sense; throws an error that names the bad rule.
    public func validate() throws {
        guard keepEveryCommitFor >= 0 else {
            throw LifeboatError("policy.invalid", "keep-every-commit duration must not be negative")
        }
        for (index, rule) in rules.enumerated() {
            guard rule.interval > 0 else {
                throw LifeboatError("policy.invalid", "rule \(index + 1): interval must be at least 1 \(rule.unit)")
            }
            let (span, overflow) = Int64(rule.retentionDuration).multipliedReportingOverflow(by: rule.unit.seconds)
            guard !overflow, span <= 100 * 366 * 86_400 else {
                throw LifeboatError("policy.invalid", "rule \(index + 1): retention longer than 100 years is not a policy")
            }
            guard rule.retentionDuration >= rule.interval else {
                throw LifeboatError(
                    "policy.invalid",
                    "rule \(index + 1): retention (\(rule.retentionDuration)) must be at least the interval (\(rule.interval))"
                )
            }
        }
    }

    /// Chooses which of one machine's commits to keep.
    ///
    /// - Parameters:
    ///   - commits: the machine's commits as (id, time in seconds since the epoch), in any order.
    ///   - now: the current time in seconds since the epoch.
    ///   - pinned: ids that must be kept whatever the rules say.
    /// - Returns: the ids to keep. For each rule, the oldest commit in each interval bucket inside the
    ///   rule's window is kept, so a kept point stays kept until it ages out of every window.
    public func select<ID: Hashable>(
        commits: [(id: ID, time: Int64)],
        now: Int64,
        pinned: Set<ID> = []
    ) -> Set<ID> {
        guard !commits.isEmpty else { return [] }
        let ordered = commits.sorted { $0.time < $1.time }
        var keep = Set<ID>()
        keep.insert(ordered[ordered.count - 1].id)
        for commit in ordered {
            if pinned.contains(commit.id) || now - commit.time < keepEveryCommitFor {
                keep.insert(commit.id)
            }
        }
        for rule in rules where rule.enabled {
            var lastBucket: Int64? = nil
            for commit in ordered where now - commit.time < rule.retentionSeconds {
                let bucket = floorDiv(commit.time, rule.intervalSeconds)
                if bucket != lastBucket {
                    keep.insert(commit.id)
                    lastBucket = bucket
                }
            }
        }
        return keep
    }
}

@inline(__always)
func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}
