/// The four DR roles (DESIGN §1.6; the incident-response article's "who analyses, who decides, who triggers").
/// A user may hold several.
public enum Role: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    /// Reads everything; writes notes and reports on incidents.
    case analyst
    /// Declares and closes incidents, approves recovery.
    case decider
    /// Launches drills; launches recovery only under an open incident; terminates recovery instances.
    case `operator`
    /// Users, roles, settings, enrollment tokens, applications.
    case admin

    public static func < (a: Role, b: Role) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// What the role is for, in the words an operator uses.
    public var summary: String {
        switch self {
        case .analyst: "analyses the situation and informs decision-makers: reads everything, writes incident notes and reports"
        case .decider: "decides whether to trigger a DR response: declares and closes incidents"
        case .operator: "triggers it: launches drills, launches recovery under an open incident, terminates instances"
        case .admin: "administers: users and roles, settings, applications, enrollment tokens, machines"
        }
    }

    /// Parses `analyst,operator` (case-insensitive, spaces allowed).
    /// - Throws: `role.unknown` naming the bad word and the valid ones.
    public static func parseList(_ text: String) throws -> Set<Role> {
        var roles = Set<Role>()
        for word in text.split(separator: ",") {
            let trimmed = String(word).trimmingCharacters(in: " ").lowercased()
            guard !trimmed.isEmpty else { continue }
            guard let role = Role(rawValue: trimmed) else {
                throw LifeboatError(
                    "role.unknown",
                    "unknown role '\(trimmed)': roles are \(Role.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            roles.insert(role)
        }
        return roles
    }
}

/// Something a request may do. Every API route names exactly one; `Permission.allowed` is the single table
/// that decides who may (the console hides what a user's roles do not allow; the server enforces).
public enum Permission: String, Sendable, Hashable, Codable, CaseIterable {
    /// Read machines, points, jobs, instances, applications, incidents, settings, objectives, metrics.
    case read
    /// Read users, tokens of others, and the audit log.
    case readAudit = "read-audit"
    /// Write notes and reports on incidents.
    case writeNotes = "write-notes"
    /// Declare and close incidents.
    case manageIncidents = "manage-incidents"
    /// Launch in Test mode (a drill).
    case launchDrill = "launch-drill"
    /// Launch in Recovery mode (also needs an open incident unless an admin turned that rule off).
    case launchRecovery = "launch-recovery"
    /// Terminate recovery instances.
    case terminateInstances = "terminate-instances"
    /// Users, roles, settings, applications, machine settings, enrollment tokens, machine removal.
    case administer

    /// The roles that grant this permission.
    public var allowed: Set<Role> {
        switch self {
        case .read: Set(Role.allCases)
        case .readAudit: [.analyst, .decider, .admin]
        case .writeNotes: [.analyst, .decider]
        case .manageIncidents: [.decider]
        case .launchDrill: [.operator]
        case .launchRecovery: [.operator]
        case .terminateInstances: [.operator]
        case .administer: [.admin]
        }
    }

    /// Whether a holder of `roles` has this permission.
    public func granted(to roles: Set<Role>) -> Bool { !allowed.isDisjoint(with: roles) }
}

extension String {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }
}
