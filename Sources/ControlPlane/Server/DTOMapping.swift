public import Catalog
import Foundation
public import LifeboatAPI
import LifeboatCore
import Recovery
import StagingStore

/// Catalog records → API bodies. Times are RFC 3339 (UTC, milliseconds); point ids are their text form.
public enum DTO {
    static func time(_ t: Timestamp?) -> String? { t?.rfc3339 }

    static func point(_ raw: UInt64?) -> String? { raw.map { "\(PointID(raw: $0))" } }

    static func machine(_ m: MachineRecord, instances: [InstanceRecord], now: Timestamp, overdueDays: Int = 30) -> MachineDTO {
        func rounded(_ v: Double?) -> Double? { v.map { ($0 * 1000).rounded() / 1000 } }
        return MachineDTO(
            name: m.name,
            state: m.isActive ? m.state : "REMOVED",
            stateReason: m.stateReason,
            connected: m.connected,
            paused: m.paused,
            lagSeconds: rounded(m.lagSeconds(now: now)),
            initialSyncPercent: rounded(m.initialSyncPercent),
            backlogBytes: m.backlogBytes,
            etaSeconds: rounded(m.etaSeconds),
            lastPoint: point(m.lastPoint),
            lastConsistentCaptureTime: time(m.lastConsistentCaptureTime),
            lastSeen: time(m.lastSeen),
            agentVersion: m.agentVersion,
            throttleMbps: m.throttleMbps,
            maxFreezeMilliseconds: m.maxFreezeMilliseconds,
            application: m.application,
            drLifecycle: m.effectiveLifecycle(now: now, overdueDays: overdueDays).rawValue,
            lastDrillAt: time(m.lastDrillAt),
            lastDrillPassedAt: time(m.lastDrillPassedAt),
            runningInstances: instances.filter { $0.machine == m.name && $0.state.holdsResources }.map {
                RunningInstanceDTO(id: $0.id, mode: $0.mode.rawValue, state: $0.state.rawValue)
            },
            launchSettings: m.launchSettings,
            volumes: m.volumes.map { VolumeDTO(name: $0.name, size: $0.size) }
        )
    }

    public static func point(_ p: PointRecord) -> PointDTO {
        PointDTO(
            id: "\(PointID(raw: p.point))",
            sequence: p.sequence,
            captureTime: p.captureTime.rfc3339,
            committedAt: p.committedAt.rfc3339,
            consistent: p.consistent,
            changedBytes: p.changedBytes
        )
    }

    static func job(_ j: JobRecord, incident: String?, requestedBy: String?) -> JobDTO {
        JobDTO(
            id: j.id,
            type: j.type.rawValue,
            initiatedBy: j.initiatedBy.rawValue,
            mode: j.mode?.rawValue,
            status: j.status.rawValue,
            createdAt: j.createdAt.rfc3339,
            startedAt: time(j.startedAt),
            endedAt: time(j.endedAt),
            requestedBy: requestedBy,
            incident: incident,
            items: j.items.map {
                JobItemDTO(
                    machine: $0.machine,
                    instance: $0.instance,
                    point: point($0.point),
                    pointCaptureTime: time($0.pointCaptureTime),
                    launchStatus: $0.launchStatus.rawValue,
                    rtoSeconds: $0.rtoSeconds.map { ($0 * 1000).rounded() / 1000 },
                    error: $0.error
                )
            }
        )
    }

    static func event(_ e: JobEvent) -> JobEventDTO {
        JobEventDTO(id: e.id, time: e.time.rfc3339, kind: e.kind, machine: e.machine, instance: e.instance, detail: e.detail, error: e.error)
    }

    static func instance(_ i: InstanceRecord) -> InstanceDTO {
        var address: String?
        if let text = i.runtime, let runtime = try? InstanceRuntime(json: text), let host = runtime.host {
            let ports = runtime.ports.sorted { $0.key < $1.key }.map { "\($0.key)→\(host):\($0.value)" }
            address = ports.isEmpty ? host : ports.joined(separator: ", ")
        }
        return InstanceDTO(
            id: i.id,
            machine: i.machine,
            job: i.job,
            mode: i.mode.rawValue,
            point: "\(PointID(raw: i.point))",
            pointCaptureTime: i.pointCaptureTime.rfc3339,
            state: i.state.rawValue,
            stateReason: i.stateReason,
            launcher: i.launcher,
            address: address,
            createdAt: i.createdAt.rfc3339,
            launchedAt: time(i.launchedAt),
            terminatedAt: time(i.terminatedAt)
        )
    }

    public static func user(_ u: UserRecord) -> UserDTO {
        UserDTO(
            name: u.name,
            roles: u.roles.sorted(),
            createdAt: u.createdAt.rfc3339,
            passwordChangedAt: u.passwordChangedAt.rfc3339,
            disabled: u.disabledAt != nil
        )
    }

    static func token(_ t: AccessTokenRecord) -> TokenDTO {
        TokenDTO(
            id: t.id,
            user: t.user,
            name: t.name,
            kind: t.kind.rawValue,
            createdAt: t.createdAt.rfc3339,
            expiresAt: t.expiresAt.rfc3339,
            revokedAt: time(t.revokedAt),
            lastUsedAt: time(t.lastUsedAt)
        )
    }

    static func enrollmentToken(_ t: EnrollmentTokenRecord) -> EnrollmentTokenDTO {
        EnrollmentTokenDTO(
            id: t.id, createdAt: t.createdAt.rfc3339, expiresAt: t.expiresAt.rfc3339, usedAt: time(t.usedAt),
            usedBy: t.usedBy, note: t.note, token: nil
        )
    }

    static func application(_ a: ApplicationRecord, objective: ObjectiveStatus?) -> ApplicationDTO {
        ApplicationDTO(
            name: a.name,
            description: a.description,
            rpoObjectiveSeconds: a.rpoSeconds,
            rtoObjectiveSeconds: a.rtoSeconds,
            launchSettings: a.launchSettings,
            machines: a.machines,
            createdAt: a.createdAt.rfc3339,
            measuredRPOSeconds: objective?.measuredRPOSeconds.map { ($0 * 1000).rounded() / 1000 },
            measuredRTOSeconds: objective?.measuredRTOSeconds.map { ($0 * 1000).rounded() / 1000 },
            lastDrillAt: time(objective?.lastDrillAt),
            rpoMet: objective?.rpoMet,
            rtoMet: objective?.rtoMet,
            machineObjectives: (objective?.machines ?? []).map {
                MachineObjectiveDTO(
                    machine: $0.machine,
                    lagSeconds: $0.lagSeconds.map { ($0 * 1000).rounded() / 1000 },
                    lastDrillRTOSeconds: $0.lastDrillRTOSeconds.map { ($0 * 1000).rounded() / 1000 },
                    lastDrillAt: time($0.lastDrillAt),
                    lastDrillPassed: $0.lastDrillPassed
                )
            }
        )
    }

    public static func incident(_ i: IncidentRecord) -> IncidentDTO {
        IncidentDTO(
            id: i.id,
            title: i.title,
            severity: i.severity.rawValue,
            applications: i.applications,
            status: i.status.rawValue,
            declaredBy: i.declaredBy,
            declaredAt: i.declaredAt.rfc3339,
            closedBy: i.closedBy,
            closedAt: time(i.closedAt),
            summary: i.summary,
            launches: i.launches,
            notes: i.notes.map { IncidentNoteDTO(id: $0.id, time: $0.time.rfc3339, author: $0.author, kind: $0.kind, text: $0.text) }
        )
    }

    static func settings(_ s: ControlSettings) -> SettingsDTO {
        SettingsDTO(
            requireIncidentForRecovery: s.requireIncidentForRecovery,
            pitPolicy: s.pitPolicy,
            defaultLaunchSettings: s.defaultLaunchSettings,
            drillOverdueDays: s.drillOverdueDays,
            sessionHours: s.sessionHours,
            loginFailuresBeforeLockout: s.loginFailuresBeforeLockout,
            lockoutSeconds: s.lockoutSeconds
        )
    }

    public static func audit(_ e: AuditEntry) -> AuditEntryDTO {
        AuditEntryDTO(
            seq: e.seq, time: e.time.rfc3339, actor: e.actor, action: e.action, target: e.target, source: e.source,
            result: e.result, detail: e.detail, hash: e.hash
        )
    }

    public static func verification(_ v: AuditVerification) -> AuditVerificationDTO {
        AuditVerificationDTO(
            intact: v.intact,
            entries: v.entries,
            headSeq: v.headSeq,
            headHash: v.headHash,
            problems: v.problems.map { AuditProblemDTO(seq: $0.seq, kind: $0.kind.rawValue, message: $0.message) }
        )
    }
}
