import Catalog
import LifeboatCore
import Logging
import NIOCore
import NIOPosix
import ReplicationProtocol
import ReplicationTransport
import StagingStore

/// One agent connection: feeds frames to `ServerSessionStateMachine` and carries out its actions against the
/// store (on the thread pool), the catalog and the connection. Runs in one task; nothing here is shared.
final class AgentSession {
    let service: ReplicationService
    let channel: any Channel
    let peer: String
    var logger: Logger
    var machine = ServerSessionStateMachine(certifiedMachine: nil)
    /// The machine this session was authorized for (HELLO accepted), for the catalog's connection state.
    var authorized: String?
    var agentVersion = ""
    var lastReportedState: ReplicationState?

    // The commit being received.
    var builder: CommitBuilder?
    var holdsGate = false
    /// The first store error of the commit being received: later extents are skipped, the commit fails at its end.
    var commitError: LifeboatError?
    var commitBytes: UInt64 = 0
    var commitVolumes: [VolumeInfo] = []
    /// Segment-framed extents in arrival order, oldest first: large ones being decoded, checked and sealed on the
    /// thread pool while the next frames arrive, small ones (no whole segment) decoded at once. `apply` writes
    /// them into the commit in this order, consecutive decoded ones in one go.
    var decoding: [(volume: String, work: DecodeWork)] = []
    /// Groups of decoded extents handed to the in-order writer, oldest first: each writes into the commit after
    /// the one before it, on the pool, while the session goes on receiving.
    var writing: [Task<Void, any Error>] = []
    /// Consecutive large extents of one volume not yet handed to the pool: they go as one job once they hold
    /// `batchBytes` (an initial sync's extents are the data runs between holes, a few hundred KiB each; a job
    /// per extent cost more in thread hops than the work it carried).
    var batch: (volume: String, extents: [(offset: UInt64, encoding: UInt8, rawLength: UInt32, data: [UInt8])], rawBytes: Int)?
    static let batchBytes = 1 << 20
    /// Jobs of large extents decoded ahead of the ones being written.
    static let decodeWindow = 8
    /// Groups handed to the writer before the session waits for the oldest.
    static let writeWindow = 8
    /// Small extents gathered before they are written together.
    static let smallBatch = 256
    /// Where the commit being received waited (debug log at its end): for the next frame, or for the pool
    /// (decoding and writing windows full).
    var waitedForFrames = Duration.zero
    var waitedForPool = Duration.zero

    init(service: ReplicationService, channel: any Channel) {
        self.service = service
        self.channel = channel
        peer = channel.remoteAddress?.description ?? "unknown peer"
        var logger = service.logger
        logger[metadataKey: "peer"] = "\(peer)"
        self.logger = logger
    }

    func run(_ connection: NIOAsyncChannel<Message, Message>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var frames = inbound.makeAsyncIterator()
                // The first frame arrives after the TLS handshake: the peer's certificate is known by then.
                guard let first = try await frames.next() else { return }
                if case .hello(_, let version, _, _) = first { agentVersion = version }
                guard try await identify(outbound) else { return }
                var next: Message? = first
                while let message = next {
                    try await perform(machine.received(message), outbound)
                    if machine.isClosed { return }
                    let t0 = ContinuousClock.now
                    next = try await frames.next()
                    waitedForFrames += ContinuousClock.now - t0
                }
            }
        } catch {
            logger.warning("connection refused or failed", metadata: ["error": "\(Self.describe(error))"])
        }
        await finish()
    }

    /// Reads the client certificate: none (may only enroll), active (a session for its machine) or revoked or
    /// superseded (refused).
    private func identify(_ outbound: NIOAsyncChannelOutboundWriter<Message>) async throws -> Bool {
        guard let der = try await TLSSetup.peerCertificateDER(of: channel).get() else { return true }
        let serial = try CertificateInspection.serial(ofDER: der)
        guard let name = try CertificateInspection.commonName(ofDER: der) else {
            logger.warning("refused: client certificate without a machine name", metadata: ["serial": "\(serial)"])
            try await outbound.write(.error(code: "auth.bad-certificate", message: "the client certificate names no machine"))
            return false
        }
        let active = try await service.pool.blocking { [catalog = service.catalog] in
            try catalog.isCertificateActive(serial: serial, machine: name)
        }
        guard active else {
            logger.warning("refused: revoked or superseded certificate", metadata: ["machine": "\(name)", "serial": "\(serial)"])
            try await outbound.write(
                .error(
                    code: "auth.revoked",
                    message: "the certificate of machine '\(name)' was revoked (machine removed or enrolled again): enroll this agent again"
                )
            )
            return false
        }
        machine = ServerSessionStateMachine(certifiedMachine: name)
        logger[metadataKey: "machine"] = "\(name)"
        return true
    }

    private func perform(
        _ actions: [ServerSessionStateMachine.Action],
        _ outbound: NIOAsyncChannelOutboundWriter<Message>
    ) async throws {
        var queue = actions[...]
        while let action = queue.popFirst() {
            if case .writeExtent(let volume, let offset, let encoding, let rawLength, let data) = action,
                encoding == SegmentFrames.encoding || encoding == 0
            {
                try await decodeAhead(volume: volume, offset: offset, encoding: encoding, rawLength: rawLength, data: data)
                continue
            }
            // Everything else happens after the extents before it were written.
            startBatch()
            try await applyDecoded(all: true)
            switch action {
            case .send(let message):
                try await outbound.write(message)
            case .authorize(let name, let volumes):
                queue += await authorize(name, volumes)
            case .enroll(let token, let name, let csr):
                queue += await enroll(token: token, machine: name, csr: csr)
            case .beginCommit(let name, let sequence, let volumes):
                await begin(machine: name, sequence: sequence, volumes: volumes)
            case .writeExtent(let volume, let offset, let encoding, let rawLength, let data):
                try await write(volume: volume, offset: offset, encoding: encoding, rawLength: rawLength, data: data)
            case .finishCommit(let sequence, let consistent, let captureTime, let epochs):
                queue += await finishCommit(sequence: sequence, consistent: consistent, captureTime: captureTime, epochs: epochs)
            case .abandonCommit(let sequence):
                logger.info("commit abandoned", metadata: ["sequence": "\(sequence)"])
                await dropCommit()
            case .recordStatus(let state, let backlog, let synced, let total, let reason):
                guard let name = authorized else { break }
                lastReportedState = state
                let update = ReplicationStatusUpdate(
                    state: state.description,
                    stateReason: reason.isEmpty ? nil : reason,
                    backlogBytes: backlog,
                    syncedBytes: synced,
                    totalBytes: total,
                    throughputBytesPerSecond: nil
                )
                try? await service.pool.blocking { [catalog = service.catalog] in
                    try catalog.recordStatus(machine: name, update)
                }
            case .close(let reason):
                if let reason {
                    logger.warning("session closed", metadata: ["reason": "\(reason)"])
                } else {
                    logger.info("session closed by the agent")
                }
                return
            }
        }
    }

    private func authorize(_ name: String, _ volumes: [VolumeInfo]) async -> [ServerSessionStateMachine.Action] {
        let service = self.service
        let peer = self.peer
        let agentVersion = self.agentVersion
        do {
            let settings = try await service.pool.blocking { () throws -> AgentSettings in
                guard let record = try service.catalog.machine(named: name), record.removedAt == nil else {
                    throw LifeboatError("auth.unknown-machine", "machine '\(name)' is not enrolled on this server")
                }
                try service.catalog.recordConnected(
                    machine: name,
                    address: peer,
                    agentVersion: agentVersion,
                    volumes: volumes.map { VolumeRecord(name: $0.name, size: $0.size) }
                )
                try service.catalog.recordEvent(machine: name, kind: "CONNECTED", detail: "from \(peer)")
                return service.settings(for: record)
            }
            if let previous = service.sessions.claim(machine: name, by: channel, settings: settings) {
                logger.notice("a new connection replaces the previous session of this machine")
                previous.close(promise: nil)
            }
            authorized = name
            // A commit of this machine still being made durable by an older session must finish first: the last
            // committed sequence decides whether the agent resends it.
            await service.gate.acquire()
            let last = service.store.latest(machine: name)?.sequence ?? 0
            await service.gate.release()
            logger.info("session established", metadata: ["last-sequence": "\(last)"])
            return machine.machineAccepted(settings: settings, lastCommittedSequence: last)
        } catch {
            logger.warning("machine refused", metadata: ["error": "\(Self.describe(error))"])
            return machine.machineRejected(Self.lifeboatError(error))
        }
    }

    private func enroll(token text: String, machine name: String, csr: [UInt8]) async -> [ServerSessionStateMachine.Action] {
        let service = self.service
        let peer = self.peer
        do {
            let issued = try await service.pool.blocking { () throws -> IssuedCertificate in
                let token = try EnrollmentTokenText(parsing: text)
                guard token.caFingerprint == service.authority.fingerprint else {
                    throw LifeboatError(
                        "enroll.bad-token",
                        "this token was made by another server (its CA fingerprint differs): create one on this server with `lifeboat tokens create`"
                    )
                }
                let issued = try service.authority.signClientCertificate(csrDER: csr, machine: name)
                try service.catalog.redeemEnrollmentToken(
                    secret: token.secret,
                    machine: name,
                    certificateSerial: issued.serial,
                    certificateExpires: issued.notAfter
                )
                try service.catalog.recordEvent(machine: name, kind: "ENROLLED", detail: "certificate \(issued.serial) from \(peer)")
                return issued
            }
            logger.notice("machine enrolled", metadata: ["machine": "\(name)", "serial": "\(issued.serial)"])
            return machine.enrollSucceeded(certificate: issued.der, ca: service.authority.certificateDER)
        } catch {
            logger.warning("enrollment refused", metadata: ["machine": "\(name)", "error": "\(Self.describe(error))"])
            return machine.enrollFailed(Self.lifeboatError(error))
        }
    }

    // MARK: Commits

    private func begin(machine name: String, sequence: UInt64, volumes: [VolumeInfo]) async {
        await service.gate.acquire()
        holdsGate = true
        commitError = nil
        commitBytes = 0
        waitedForFrames = .zero
        waitedForPool = .zero
        commitVolumes = volumes
        do {
            builder = try await service.pool.blocking { [store = service.store] () throws -> CommitBuilder in
                let latest = store.latest(machine: name)?.sequence ?? 0
                guard latest + 1 == sequence else {
                    throw LifeboatError(
                        "replication.out-of-sequence",
                        "commit \(sequence) does not follow the last stored commit \(latest) of '\(name)': reconnect to learn it"
                    )
                }
                let builder = try store.beginCommit(machine: name)
                do {
                    for volume in volumes {
                        try Self.base(volume, on: builder, store: store)
                    }
                } catch {
                    builder.abandon()
                    throw error
                }
                return builder
            }
        } catch {
            commitError = Self.lifeboatError(error)
            logger.warning("cannot begin commit", metadata: ["sequence": "\(sequence)", "error": "\(Self.describe(error))"])
        }
    }

    /// Starts `volume` in the commit from the state its change set applies to: empty (base epoch 0), the parent
    /// (the usual case), or an older commit whose state the agent still builds on (its acknowledgement was lost).
    static func base(_ volume: VolumeInfo, on builder: CommitBuilder, store: Store) throws {
        guard volume.baseEpoch != 0 else {
            try builder.reset(volume: volume.name, size: volume.size)
            return
        }
        if let parent = builder.parent, parent.volumes.first(where: { $0.name == volume.name })?.sourceEpoch == volume.baseEpoch {
            try builder.setSize(volume: volume.name, size: volume.size)
            return
        }
        let older = store.commits(machine: builder.machine).reversed().first { commit in
            commit.volumes.contains { $0.name == volume.name && $0.sourceEpoch == volume.baseEpoch }
        }
        guard let older else {
            throw LifeboatError(
                "replication.unknown-base",
                "the server holds no state of volume '\(volume.name)' at epoch \(volume.baseEpoch) (pruned or lost): the agent rescans its volumes"
            )
        }
        try builder.rebase(volume: volume.name, onto: older, size: volume.size)
    }

    private func write(volume: String, offset: UInt64, encoding: UInt8, rawLength: UInt32, data: [UInt8]) async throws {
        guard let builder, commitError == nil else { return }
        commitBytes += UInt64(rawLength)
        do {
            try await service.pool.blocking {
                var bytes = data
                if encoding == 1 { bytes = try ExtentCompression.decompress(data, rawLength: Int(rawLength)) }
                try bytes.withUnsafeBytes { try builder.write(volume: volume, offset: Int64(offset), bytes: $0) }
            }
        } catch let error as LifeboatError where error.code == "protocol.malformed" {
            throw error  // a lying peer: the connection closes, the commit is abandoned
        } catch {
            commitError = Self.lifeboatError(error)
            logger.warning("cannot store extent", metadata: ["volume": "\(volume)", "error": "\(Self.describe(error))"])
        }
    }

    /// Starts decoding a segment-framed extent, or splitting a raw one (encoding 0) into segments: on the
    /// thread pool when it holds a whole segment (decoding, hashing and sealing are the work; consecutive ones
    /// in jobs of about 1 MiB, `startBatch`), at once when it does not (a few KiB: a thread hop would cost more;
    /// small extents are written in batches). Whole raw segments are sealed plain and compressed later in the
    /// background (`CommitBuilder.prepareSegment(content:)`). Writes the oldest ones once too many are ahead.
    private func decodeAhead(volume: String, offset: UInt64, encoding: UInt8, rawLength: UInt32, data: [UInt8]) async throws {
        guard builder != nil, commitError == nil else { return }
        commitBytes += UInt64(rawLength)
        if Int(rawLength) < SegmentFrames.segmentSize {
            startBatch()
            if encoding == 0 {
                decoding.append((volume, .decoded([.partial(offset: offset, bytes: data)])))
            } else {
                let pieces = try SegmentFrames.decode(data, offset: offset, rawLength: Int(rawLength))
                decoding.append((volume, .decoded(pieces.map { .partial(offset: $0.offset, bytes: $0.bytes) })))
            }
        } else {
            if let batch, batch.volume != volume { startBatch() }
            var next = batch ?? (volume, [], 0)
            next.extents.append((offset, encoding, rawLength, data))
            next.rawBytes += Int(rawLength)
            batch = next
            if next.rawBytes >= Self.batchBytes { startBatch() }
        }
        let t0 = ContinuousClock.now
        while decoding.count(where: \.work.isRunning) > Self.decodeWindow || decoding.count > Self.smallBatch {
            try await applyDecoded(all: false)
        }
        waitedForPool += ContinuousClock.now - t0
    }

    /// Hands the batch of large extents to the pool as one job (in arrival order among the decoding ones).
    private func startBatch() {
        guard let batch else { return }
        self.batch = nil
        guard let builder else { return }
        let pool = service.pool
        let work = Task { () throws -> [DecodedPiece] in
            try await pool.blocking { () throws -> [DecodedPiece] in
                var pieces: [DecodedPiece] = []
                for extent in batch.extents {
                    if extent.encoding == 0 {
                        pieces += try ExtentPreparation.raw(extent.data, offset: extent.offset, builder: builder)
                    } else {
                        pieces += try ExtentPreparation.frames(
                            extent.data,
                            offset: extent.offset,
                            rawLength: extent.rawLength,
                            builder: builder
                        )
                    }
                }
                return pieces
            }
        }
        decoding.append((batch.volume, .running(work)))
    }

    /// Hands decoded extents to the in-order writer — the oldest one (with the decoded ones right after it), or
    /// all of them — and waits for the oldest writes beyond the window, or for all of them.
    private func applyDecoded(all: Bool) async throws {
        repeat {
            guard !decoding.isEmpty else { break }
            var group: [(volume: String, work: DecodeWork)] = []
            repeat {
                group.append(decoding.removeFirst())
            } while !decoding.isEmpty && (all || !decoding[0].work.isRunning)
            startWriting(group)
        } while all
        while !writing.isEmpty && (all || writing.count > Self.writeWindow) {
            try await finishOldestWrite()
        }
    }

    /// Writes a group of extents into the commit after the group before it (a failure before it fails it too).
    private func startWriting(_ group: [(volume: String, work: DecodeWork)]) {
        let previous = writing.last
        let pool = service.pool
        let builder = commitError == nil ? self.builder : nil
        writing.append(
            Task {
                try await previous?.value
                var decoded: [(volume: String, pieces: [DecodedPiece])] = []
                for (volume, work) in group { decoded.append((volume, try await work.pieces())) }
                guard let builder else { return }
                try await pool.blocking { [decoded] in
                    for (volume, pieces) in decoded {
                        for piece in pieces {
                            switch piece {
                            case .whole(let index, let prepared):
                                try builder.putSegment(volume: volume, index: index, prepared)
                            case .partial(let offset, let bytes):
                                try bytes.withUnsafeBytes { try builder.write(volume: volume, offset: Int64(offset), bytes: $0) }
                            }
                        }
                    }
                }
            }
        )
    }

    /// Waits for the oldest group of writes. A lying peer's frames close the connection; a store error fails the
    /// commit (later extents are skipped, the commit fails at its end).
    private func finishOldestWrite() async throws {
        let task = writing.removeFirst()
        do {
            try await task.value
        } catch let error as LifeboatError where error.code == "protocol.malformed" {
            throw error  // a lying peer: the connection closes, the commit is abandoned
        } catch {
            if commitError == nil {
                commitError = Self.lifeboatError(error)
                logger.warning("cannot store extent", metadata: ["error": "\(Self.describe(error))"])
            }
        }
    }

    /// Drops extents still being decoded or written (the commit is over), after their work ended.
    private func discardDecoded() async {
        batch = nil
        let pending = decoding
        decoding = []
        for entry in pending {
            do {
                _ = try await entry.work.pieces()
            } catch let error as LifeboatError where error.code == "protocol.malformed" {
                logger.warning("connection refused or failed", metadata: ["error": "\(Self.describe(error))"])
            } catch {}
        }
        let writes = writing
        writing = []
        for task in writes { _ = try? await task.value }
    }

    private func finishCommit(sequence: UInt64, consistent: Bool, captureTime: Timestamp, epochs: [UInt64]) async
        -> [ServerSessionStateMachine.Action]
    {
        let actions = await commit(sequence: sequence, consistent: consistent, captureTime: captureTime, epochs: epochs)
        await dropCommit()
        return actions
    }

    private func commit(sequence: UInt64, consistent: Bool, captureTime: Timestamp, epochs: [UInt64]) async
        -> [ServerSessionStateMachine.Action]
    {
        guard let builder, commitError == nil else {
            let error = commitError ?? LifeboatError("store.commit-failed", "the commit could not be started")
            await recordFailure(error)
            return machine.commitFailed(sequence: sequence, error: error)
        }
        self.builder = nil
        let name = builder.machine
        let changed = commitBytes
        let volumes = commitVolumes
        logger.debug(
            "receive waits",
            metadata: ["frames": "\(waitedForFrames)", "pool": "\(waitedForPool)", "sequence": "\(sequence)"]
        )
        do {
            builder.captureTime = captureTime
            builder.crashConsistent = consistent
            let record = try await service.pool.blocking { () throws -> CommitRecord in
                for (volume, epoch) in zip(volumes, epochs) {
                    try builder.setSourceEpoch(volume: volume.name, epoch: epoch)
                }
                return try builder.commit()
            }
            if record.sequence != sequence {
                logger.error("store sequence differs from the agent's", metadata: ["store": "\(record.sequence)", "agent": "\(sequence)"])
            }
            try? await service.pool.blocking { [catalog = service.catalog] in
                try catalog.recordCommit(
                    machine: name,
                    point: record.id.raw,
                    sequence: record.sequence,
                    captureTime: captureTime,
                    consistent: consistent,
                    changedBytes: changed
                )
            }
            logger.info(
                "commit acknowledged",
                metadata: ["sequence": "\(sequence)", "point": "\(record.id)", "consistent": "\(consistent)"]
            )
            return machine.commitSucceeded(sequence: sequence, point: record.id.raw, time: record.time)
        } catch {
            let failure = Self.lifeboatError(error)
            logger.error("commit failed", metadata: ["sequence": "\(sequence)", "error": "\(Self.describe(error))"])
            await recordFailure(failure)
            return machine.commitFailed(sequence: sequence, error: failure)
        }
    }

    private func recordFailure(_ error: LifeboatError) async {
        guard let name = authorized else { return }
        try? await service.pool.blocking { [catalog = service.catalog] in
            try catalog.recordStatus(
                machine: name,
                ReplicationStatusUpdate(
                    state: "STALLED",
                    stateReason: "the server could not store a commit: \(error.message)",
                    backlogBytes: 0,
                    syncedBytes: 0,
                    totalBytes: 0,
                    throughputBytesPerSecond: nil
                )
            )
            try catalog.recordEvent(machine: name, kind: "COMMIT_FAILED", detail: "[\(error.code)] \(error.message)")
        }
    }

    private func dropCommit() async {
        await discardDecoded()
        builder?.abandon()
        builder = nil
        if holdsGate {
            holdsGate = false
            await service.gate.release()
        }
    }

    /// The connection is over: abandon what is open and record the disconnection.
    private func finish() async {
        for action in machine.connectionClosed() {
            if case .abandonCommit(let sequence) = action {
                logger.info("commit abandoned: connection closed", metadata: ["sequence": "\(sequence)"])
            }
        }
        await dropCommit()
        let stopped = lastReportedState == .stopped
        if let name = authorized, service.sessions.remove(channel, machine: name) {
            try? await service.pool.blocking { [catalog = service.catalog] in
                try catalog.recordDisconnected(machine: name)
                try catalog.recordEvent(machine: name, kind: "DISCONNECTED", detail: "")
                if stopped {
                    // A clean stop of the agent: STOPPED, not a lost connection.
                    try catalog.recordStatus(
                        machine: name,
                        ReplicationStatusUpdate(
                            state: "STOPPED",
                            stateReason: "the agent was stopped",
                            backlogBytes: 0,
                            syncedBytes: 0,
                            totalBytes: 0,
                            throughputBytesPerSecond: nil
                        )
                    )
                }
            }
        }
    }

    static func lifeboatError(_ error: any Error) -> LifeboatError {
        error as? LifeboatError ?? LifeboatError("server.internal", "\(error)")
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? LifeboatError { return "[\(e.code)] \(e.description)" }
        return "\(error)"
    }
}

/// A piece of a segment-framed extent, ready to write: a whole segment checked and sealed, or bytes of a
/// partly written segment (those go through the commit's usual path).
enum DecodedPiece: Sendable {
    case whole(index: Int, PreparedSegment)
    case partial(offset: UInt64, bytes: [UInt8])
}

/// A segment-framed extent being decoded on the pool, or decoded.
enum DecodeWork {
    case running(Task<[DecodedPiece], any Error>)
    case decoded([DecodedPiece])

    var isRunning: Bool {
        if case .running = self { return true }
        return false
    }

    func pieces() async throws -> [DecodedPiece] {
        switch self {
        case .running(let task): try await task.value
        case .decoded(let pieces): pieces
        }
    }
}

/// Turning large extents into pieces for the commit (on the session's thread pool).
enum ExtentPreparation {
    /// A raw extent's whole segments sealed plain (compressed later), the rest left for the commit's usual path.
    static func raw(_ data: [UInt8], offset: UInt64, builder: CommitBuilder) throws -> [DecodedPiece] {
        let size = UInt64(SegmentFrames.segmentSize)
        return try splitRaw(data, offset: offset).map { (piece) throws -> DecodedPiece in
            guard piece.bytes.count == Int(size), piece.offset % size == 0 else {
                return .partial(offset: piece.offset, bytes: Array(piece.bytes))
            }
            return .whole(index: Int(piece.offset / size), try builder.prepareSegment(content: piece.bytes))
        }
    }

    /// A segment-framed extent decoded: whole segments checked and sealed with their frames, the rest as bytes.
    static func frames(_ data: [UInt8], offset: UInt64, rawLength: UInt32, builder: CommitBuilder) throws -> [DecodedPiece] {
        let pieces = try SegmentFrames.decode(data, offset: offset, rawLength: Int(rawLength))
        return try data.withUnsafeBytes { (raw) throws -> [DecodedPiece] in
            try pieces.map { (piece) throws -> DecodedPiece in
                guard piece.isWholeSegment else { return .partial(offset: piece.offset, bytes: piece.bytes) }
                let frame = UnsafeRawBufferPointer(rebasing: raw[piece.frame])
                return .whole(index: Int(piece.offset / UInt64(SegmentFrames.segmentSize)), try builder.prepareSegment(content: piece.bytes, frame: frame))
            }
        }
    }

    /// A raw extent cut at segment boundaries (slices of it: nothing is copied).
    static func splitRaw(_ data: [UInt8], offset: UInt64) -> [(offset: UInt64, bytes: ArraySlice<UInt8>)] {
        let size = UInt64(SegmentFrames.segmentSize)
        var pieces: [(offset: UInt64, bytes: ArraySlice<UInt8>)] = []
        var position = offset
        var start = 0
        while start < data.count {
            let count = min(data.count - start, Int(size - position % size))
            pieces.append((position, data[start..<(start + count)]))
            start += count
            position += UInt64(count)
        }
        return pieces
    }
}
