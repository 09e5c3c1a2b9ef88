import LifeboatCore
import NIOCore
import ReplicationProtocol

/// The open connections: closed together at shutdown, and at most one live session per machine (a reconnecting
/// agent replaces a connection the server has not noticed is dead yet).
final class SessionRegistry: @unchecked Sendable {
    private let lock = PlainLock()
    private var channels: [ObjectIdentifier: any Channel] = [:]
    private var byMachine: [String: ObjectIdentifier] = [:]
    /// The settings each machine's current session was last given.
    private var settingsByMachine: [String: AgentSettings] = [:]
    private var closing = false

    /// Registers a connection; false when the server is shutting down.
    func add(_ channel: any Channel) -> Bool {
        lock.withLock {
            guard !closing else { return false }
            channels[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    /// Makes `channel` the session of `machine`, which was given `settings`; returns the connection it replaces,
    /// to be closed.
    func claim(machine: String, by channel: any Channel, settings: AgentSettings) -> (any Channel)? {
        lock.withLock {
            let id = ObjectIdentifier(channel)
            let previous = byMachine[machine].flatMap { $0 == id ? nil : channels[$0] }
            byMachine[machine] = id
            settingsByMachine[machine] = settings
            return previous
        }
    }

    /// The current session of every machine with the settings it was last given.
    func machineSessions() -> [(machine: String, channel: any Channel, settings: AgentSettings)] {
        lock.withLock {
            byMachine.compactMap { machine, id in
                guard let channel = channels[id], let settings = settingsByMachine[machine] else { return nil }
                return (machine, channel, settings)
            }
        }
    }

    /// Records that the session `channel` of `machine` was given `settings`; false when it is no longer current.
    func settingsSent(_ settings: AgentSettings, machine: String, channel: any Channel) -> Bool {
        lock.withLock {
            guard byMachine[machine] == ObjectIdentifier(channel) else { return false }
            settingsByMachine[machine] = settings
            return true
        }
    }

    /// Whether `closeAll` was called (the server is stopping).
    var isClosing: Bool { lock.withLock { closing } }

    /// Forgets a connection; true when it was still its machine's current session.
    @discardableResult
    func remove(_ channel: any Channel, machine: String?) -> Bool {
        lock.withLock {
            let id = ObjectIdentifier(channel)
            channels[id] = nil
            guard let machine, byMachine[machine] == id else { return false }
            byMachine[machine] = nil
            settingsByMachine[machine] = nil
            return true
        }
    }

    func closeAll() {
        let all = lock.withLock { () -> [any Channel] in
            closing = true
            return Array(channels.values)
        }
        for channel in all { channel.close(promise: nil) }
    }
}
