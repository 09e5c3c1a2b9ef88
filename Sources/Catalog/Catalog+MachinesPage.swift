import Foundation
import GRDB
import LifeboatCore

/// What the Machines page and the API filter machines by; empty strings mean "any".
public struct MachineFilter: Sendable, Equatable {
    /// A case-insensitive part of the name or the application.
    public var search: String
    public var application: String
    public var state: String
    public var includeRemoved: Bool

    public init(search: String = "", application: String = "", state: String = "", includeRemoved: Bool = false) {
        self.search = search
        self.application = application
        self.state = state
        self.includeRemoved = includeRemoved
    }
}

extension Catalog {
    /// One page of the machines matching `filter`, sorted by name, and how many match in all: filtered and
    /// paged by SQLite, so a page costs the same with thousands of machines.
    public func machinesPage(filter: MachineFilter, offset: Int, limit: Int) throws -> (machines: [MachineRecord], total: Int) {
        try read { db in
            var conditions: [String] = []
            var arguments: [any DatabaseValueConvertible] = []
            if !filter.includeRemoved { conditions.append("removed_at IS NULL") }
            if !filter.search.isEmpty {
                let pattern = "%" + filter.search.lowercased().replacingOccurrences(of: "\\", with: "\\\\")
                    .replacingOccurrences(of: "%", with: "\\%").replacingOccurrences(of: "_", with: "\\_") + "%"
                conditions.append("(lower(name) LIKE ? ESCAPE '\\' OR lower(coalesce(application, '')) LIKE ? ESCAPE '\\')")
                arguments += [pattern, pattern]
            }
            if !filter.application.isEmpty {
                conditions.append("application = ?")
                arguments.append(filter.application)
            }
            if !filter.state.isEmpty {
                conditions.append("state = ?")
                arguments.append(filter.state)
            }
            let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let total = try Int.fetchOne(db, sql: "SELECT count(*) FROM machines \(whereClause)", arguments: StatementArguments(arguments)) ?? 0
            let rows = try Row.fetchAll(
                db,
                sql: "SELECT \(MachineRecord.columns) FROM machines \(whereClause) ORDER BY name LIMIT ? OFFSET ?",
                arguments: StatementArguments(arguments + [max(0, limit), max(0, offset)])
            )
            let names = rows.map { $0["name"] as String }
            var volumes: [String: [VolumeRecord]] = [:]
            // In chunks: SQLite limits the number of variables in one statement.
            for start in stride(from: 0, to: names.count, by: 500) {
                let chunk = Array(names[start..<min(start + 500, names.count)])
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                for row in try Row.fetchAll(
                    db,
                    sql: "SELECT machine, name, size FROM machine_volumes WHERE machine IN (\(marks)) ORDER BY machine, name",
                    arguments: StatementArguments(chunk)
                ) {
                    volumes[row["machine"], default: []].append(VolumeRecord(name: row["name"], size: row["size"]))
                }
            }
            return (rows.map { MachineRecord(row: $0, volumes: volumes[$0["name"]] ?? []) }, total)
        }
    }
}

