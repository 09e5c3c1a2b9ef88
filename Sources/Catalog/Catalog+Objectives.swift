import GRDB
public import LifeboatCore

// Recovery objectives measured: RPO from each machine's replication lag, RTO from each machine's newest
// passed drill (the `rto_ns` the launch service records on a LAUNCHED item of a TEST launch job).

extension Catalog {
    /// Every application's objectives against what is measured at `now`, sorted by application name.
    public func objectives(now: Timestamp) throws -> [ObjectiveStatus] {
        try read { db in
            let drills = try Catalog.lastPassedDrillRTOs(db)
            var machines: [String: MachineRecord] = [:]
            for row in try Row.fetchAll(
                db,
                sql:
                    "SELECT \(MachineRecord.columns) FROM machines WHERE removed_at IS NULL AND application IS NOT NULL"
            ) {
                let machine = MachineRecord(row: row, volumes: [])
                machines[machine.name] = machine
            }
            return try Catalog.fetchApplications(db).map { application in
                let members = application.machines.compactMap { machines[$0] }.map { machine in
                    MachineObjective(
                        machine: machine.name,
                        lagSeconds: machine.lagSeconds(now: now),
                        lastDrillRTOSeconds: drills[machine.name].map { Double($0) / 1e9 },
                        lastDrillAt: machine.lastDrillAt,
                        lastDrillPassed: machine.lastDrillAt.map { drill in
                            machine.lastDrillPassedAt.map { $0 >= drill } ?? false
                        }
                    )
                }
                return Catalog.status(of: application, machines: members)
            }
        }
    }

    /// Folds the machines' measurements into the application's: the worst of each, unknown if any is unknown.
    private static func status(of application: ApplicationRecord, machines: [MachineObjective]) -> ObjectiveStatus {
        func worst(_ values: [Double?]) -> Double? {
            guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else { return nil }
            return values.compactMap { $0 }.max()
        }
        func met(_ measured: Double?, _ objective: Int64?) -> Bool? {
            guard let measured, let objective else { return nil }
            return measured <= Double(objective)
        }
        let rpo = worst(machines.map(\.lagSeconds))
        let rto = worst(machines.map(\.lastDrillRTOSeconds))
        return ObjectiveStatus(
            application: application.name,
            rpoObjectiveSeconds: application.rpoSeconds,
            rtoObjectiveSeconds: application.rtoSeconds,
            measuredRPOSeconds: rpo,
            measuredRTOSeconds: rto,
            lastDrillAt: machines.compactMap(\.lastDrillAt).max(),
            rpoMet: met(rpo, application.rpoSeconds),
            rtoMet: met(rto, application.rtoSeconds),
            machines: machines
        )
    }

    /// Per machine, the RTO in nanoseconds of its newest LAUNCHED item of a TEST launch job.
    private static func lastPassedDrillRTOs(_ db: Database) throws -> [String: Int64] {
        var newest: [String: Int64] = [:]
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT i.machine, i.rto_ns FROM job_items i JOIN jobs j ON j.id = i.job
                WHERE j.type = ? AND j.mode = ? AND i.launch_status = ? AND i.rto_ns IS NOT NULL
                ORDER BY j.created_at DESC, j.rowid DESC
                """,
            arguments: [JobType.launch.rawValue, LaunchMode.test.rawValue, LaunchStatus.launched.rawValue]
        )
        for row in rows {
            let machine: String = row["machine"]
            if newest[machine] == nil { newest[machine] = row["rto_ns"] }
        }
        return newest
    }
}
