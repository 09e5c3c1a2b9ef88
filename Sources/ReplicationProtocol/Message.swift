public import LifeboatCore

/// One volume as the agent announces it.
public struct VolumeInfo: Sendable, Hashable {
    public var name: String
    public var size: Int64
    /// In BEGIN_COMMIT: the state of the volume the commit's extents apply to, named by the tracker epoch
    /// that the server recorded with it (`VolumeState.sourceEpoch`); 0 = an empty, all-zero volume (initial
    /// sync, rescan). Unused (0) in HELLO.
    public var baseEpoch: UInt64

    public init(name: String, size: Int64, baseEpoch: UInt64 = 0) {
        self.name = name
        self.size = size
        self.baseEpoch = baseEpoch
    }
}

/// What the server tells an agent to do: bandwidth, freeze limit. Pushed in WELCOME and SETTINGS.
public struct AgentSettings: Sendable, Hashable {
    /// Bandwidth limit in Mbit/s; 0 = none.
    public var throttleMbps: UInt32
    /// The longest the agent may keep filesystems frozen for a consistent point, in milliseconds.
    public var maxFreezeMilliseconds: UInt32
    /// The agent sends PING at least this often while it has nothing else to send (the server closes
    /// connections that stay silent for longer than its idle timeout).
    public var keepaliveMilliseconds: UInt32
    /// Replication paused by an operator: the agent reports PAUSED, keeps the connection and sends no commit
    /// until settings without it arrive.
    public var paused: Bool

    public init(
        throttleMbps: UInt32 = 0,
        maxFreezeMilliseconds: UInt32 = 250,
        keepaliveMilliseconds: UInt32 = 20_000,
        paused: Bool = false
    ) {
        self.throttleMbps = throttleMbps
        self.maxFreezeMilliseconds = maxFreezeMilliseconds
        self.keepaliveMilliseconds = keepaliveMilliseconds
        self.paused = paused
    }
}

/// Replication states, as in DRS.
public enum ReplicationState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case initiating = 1
    case initialSync = 2
    case continuous = 3
    case backlog = 4
    case rescan = 5
    case stalled = 6
    case disconnected = 7
    case paused = 8
    case stopped = 9

    public var description: String {
        switch self {
        case .initiating: "INITIATING"
        case .initialSync: "INITIAL_SYNC"
        case .continuous: "CONTINUOUS"
        case .backlog: "BACKLOG"
        case .rescan: "RESCAN"
        case .stalled: "STALLED"
        case .disconnected: "DISCONNECTED"
        case .paused: "PAUSED"
        case .stopped: "STOPPED"
        }
    }
}

/// Every message of the agent ↔ replication server protocol (docs/replication-protocol.md).
public enum Message: Sendable, Equatable {
    /// Agent → server, first frame: who I am and what I protect.
    case hello(protocolVersion: UInt16, agentVersion: String, machine: String, volumes: [VolumeInfo])
    /// Server → agent: accepted; the settings, and the last commit the server holds for this machine
    /// (sequence 0 = none), so that an agent that crashed before an ack knows whether it landed.
    case welcome(protocolVersion: UInt16, settings: AgentSettings, lastCommittedSequence: UInt64)
    /// Agent → server: a commit starts; the volumes' sizes at this commit (volumes may grow).
    case beginCommit(sequence: UInt64, volumes: [VolumeInfo])
    /// Agent → server: changed bytes of one volume (index into the commit's volume list). `encoding` 0 =
    /// raw; 1 = zstd, in which case `rawLength` is the decoded length; 2 = one zstd frame per piece of the
    /// extent cut at 64 KiB volume boundaries (the store keeps whole segments' frames as they are). Offsets are
    /// 4 KiB aligned.
    case extent(volume: UInt16, offset: UInt64, encoding: UInt8, rawLength: UInt32, data: [UInt8])
    /// Agent → server: the commit is complete. `extents` and `bytes` (raw) let the server check it got
    /// everything; `consistent` says whether the capture was crash-consistent (frozen); `captureTime` is
    /// the instant the point represents.
    /// `epochs` (one per volume of BEGIN_COMMIT, in its order) name the states the commit creates.
    case endCommit(
        sequence: UInt64,
        extents: UInt64,
        bytes: UInt64,
        consistent: Bool,
        captureTime: Timestamp,
        epochs: [UInt64]
    )
    /// Server → agent: the commit is durable. The agent may forget its changes now.
    case commitAck(sequence: UInt64, point: UInt64, time: Timestamp)
    /// Server → agent: the commit was not stored; nothing of it is visible. The agent keeps its changes.
    case commitFailed(sequence: UInt64, code: String, message: String)
    /// Agent → server: where replication stands, for the console.
    /// `reason` says why (a stalled state's cause, why the last point is not crash-consistent); empty if none.
    case status(state: ReplicationState, backlogBytes: UInt64, syncedBytes: UInt64, totalBytes: UInt64, reason: String)
    /// Server → agent: new settings.
    case settings(AgentSettings)
    case ping(nonce: UInt64)
    case pong(nonce: UInt64)
    /// Either side: a fatal error; the sender closes the connection after it.
    case error(code: String, message: String)
    /// Either side: a clean close.
    case goodbye
    /// Agent → server, first and only frame of an enrollment connection (no client certificate): the
    /// one-time token, the machine's name and a certificate signing request (DER) for its own key.
    case enroll(token: String, machine: String, csr: [UInt8])
    /// Server → agent: the signed client certificate and the CA certificate (both DER); the server closes.
    case enrolled(certificate: [UInt8], ca: [UInt8])

    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .beginCommit: .beginCommit
        case .extent: .extent
        case .endCommit: .endCommit
        case .commitAck: .commitAck
        case .commitFailed: .commitFailed
        case .status: .status
        case .settings: .settings
        case .ping: .ping
        case .pong: .pong
        case .error: .error
        case .goodbye: .goodbye
        case .enroll: .enroll
        case .enrolled: .enrolled
        }
    }
}

/// The type byte of a frame.
public enum MessageType: UInt8, Sendable, CaseIterable {
    case hello = 1
    case welcome = 2
    case beginCommit = 3
    case extent = 4
    case endCommit = 5
    case commitAck = 6
    case commitFailed = 7
    case status = 8
    case settings = 9
    case ping = 10
    case pong = 11
    case error = 12
    case goodbye = 13
    case enroll = 14
    case enrolled = 15
}

/// The protocol version this code speaks.
public enum ReplicationProtocolVersion {
    /// 2: EXTENT encoding 2 (segment frames).
    public static let current: UInt16 = 2
}
