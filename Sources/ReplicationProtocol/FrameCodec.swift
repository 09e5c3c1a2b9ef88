import LifeboatCore

/// Frames on the wire: `u32 length` (big-endian, counting the type byte and the payload), `u8 type`,
/// payload. See docs/replication-protocol.md for every payload.
public enum FrameCodec {
    /// The largest frame (type + payload) accepted: an extent of up to 4 MiB plus its header.
    public static let maxFrameLength = (4 << 20) + 64
    /// The largest extent payload a sender puts in one frame.
    public static let maxExtentBytes = 4 << 20
    static let maxString = 1024
    static let maxVolumes = 256
    /// The largest certificate or CSR carried by ENROLL / ENROLLED.
    static let maxBlob = 16 << 10

    /// Encodes a message as one frame.
    public static func encode(_ message: Message) -> [UInt8] {
        let (head, body) = encodeParts(message)
        return body.isEmpty ? head : head + body
    }

    /// A frame in two parts to be sent one after the other: everything but an extent's data, and that data (empty
    /// for other messages), so a sender can write the data into its buffer without joining them first.
    public static func encodeParts(_ message: Message) -> (head: [UInt8], body: [UInt8]) {
        var body: [UInt8] = []
        var w = WireWriter()
        w.u32(0)  // length, patched below
        w.u8(message.type.rawValue)
        switch message {
        case .hello(let version, let agentVersion, let machine, let volumes):
            w.u16(version)
            w.string(agentVersion)
            w.string(machine)
            w.volumes(volumes)
        case .welcome(let version, let settings, let last):
            w.u16(version)
            w.settings(settings)
            w.u64(last)
        case .beginCommit(let sequence, let volumes):
            w.u64(sequence)
            w.volumes(volumes)
        case .extent(let volume, let offset, let encoding, let rawLength, let data):
            w.u16(volume)
            w.u64(offset)
            w.u8(encoding)
            w.u32(rawLength)
            body = data
        case .endCommit(let sequence, let extents, let bytes, let consistent, let time, let epochs):
            w.u64(sequence)
            w.u64(extents)
            w.u64(bytes)
            w.u8(consistent ? 1 : 0)
            w.u64(UInt64(bitPattern: time.nanoseconds))
            w.u16(UInt16(min(epochs.count, FrameCodec.maxVolumes)))
            for e in epochs.prefix(FrameCodec.maxVolumes) { w.u64(e) }
        case .commitAck(let sequence, let point, let time):
            w.u64(sequence)
            w.u64(point)
            w.u64(UInt64(bitPattern: time.nanoseconds))
        case .commitFailed(let sequence, let code, let message):
            w.u64(sequence)
            w.string(code)
            w.string(message)
        case .status(let state, let backlog, let synced, let total, let reason):
            w.u8(state.rawValue)
            w.u64(backlog)
            w.u64(synced)
            w.u64(total)
            w.string(reason)
        case .settings(let settings):
            w.settings(settings)
        case .ping(let nonce), .pong(let nonce):
            w.u64(nonce)
        case .error(let code, let message):
            w.string(code)
            w.string(message)
        case .goodbye:
            break
        case .enroll(let token, let machine, let csr):
            w.string(token)
            w.string(machine)
            w.blob(csr)
        case .enrolled(let certificate, let ca):
            w.blob(certificate)
            w.blob(ca)
        }
        let length = UInt32(w.bytes.count - 4 + body.count)
        w.bytes[0] = UInt8(length >> 24)
        w.bytes[1] = UInt8(truncatingIfNeeded: length >> 16)
        w.bytes[2] = UInt8(truncatingIfNeeded: length >> 8)
        w.bytes[3] = UInt8(truncatingIfNeeded: length)
        return (w.bytes, body)
    }

    /// Decodes one frame body (type byte + payload, without the length prefix).
    public static func decode(frame: ArraySlice<UInt8>) throws -> Message {
        try frame.withUnsafeBytes { try decode(frame: $0) }
    }

    /// Decodes one frame body in place (the receive buffer's bytes): only an extent's data is copied out.
    public static func decode(frame: UnsafeRawBufferPointer) throws -> Message {
        var r = WireReader(frame)
        let typeByte = try r.u8()
        guard let type = MessageType(rawValue: typeByte) else {
            throw LifeboatError.malformed("unknown message type \(typeByte)")
        }
        let message: Message
        switch type {
        case .hello:
            message = .hello(
                protocolVersion: try r.u16(),
                agentVersion: try r.string(),
                machine: try r.string(),
                volumes: try r.volumes()
            )
        case .welcome:
            message = .welcome(protocolVersion: try r.u16(), settings: try r.settings(), lastCommittedSequence: try r.u64())
        case .beginCommit:
            message = .beginCommit(sequence: try r.u64(), volumes: try r.volumes())
        case .extent:
            let volume = try r.u16()
            let offset = try r.u64()
            let encoding = try r.u8()
            let rawLength = try r.u32()
            let data = r.rest()
            guard encoding <= 2 else { throw LifeboatError.malformed("extent has unknown encoding \(encoding)") }
            guard !data.isEmpty, rawLength > 0, rawLength <= UInt32(maxExtentBytes) else {
                throw LifeboatError.malformed("extent of \(rawLength) bytes is out of range")
            }
            guard encoding != 0 || UInt32(data.count) == rawLength else {
                throw LifeboatError.malformed("raw extent carries \(data.count) bytes but says \(rawLength)")
            }
            guard offset <= UInt64(Int64.max) - UInt64(rawLength) else {
                throw LifeboatError.malformed("extent offset \(offset) is out of range")
            }
            message = .extent(volume: volume, offset: offset, encoding: encoding, rawLength: rawLength, data: data)
        case .endCommit:
            let sequence = try r.u64()
            let extents = try r.u64()
            let bytes = try r.u64()
            let flag = try r.u8()
            guard flag <= 1 else { throw LifeboatError.malformed("end-commit has a bad consistency flag") }
            let time = Timestamp(nanoseconds: Int64(bitPattern: try r.u64()))
            let count = Int(try r.u16())
            guard count <= FrameCodec.maxVolumes else { throw LifeboatError.malformed("\(count) epochs is too many") }
            var epochs: [UInt64] = []
            for _ in 0..<count { epochs.append(try r.u64()) }
            message = .endCommit(
                sequence: sequence,
                extents: extents,
                bytes: bytes,
                consistent: flag == 1,
                captureTime: time,
                epochs: epochs
            )
        case .commitAck:
            message = .commitAck(
                sequence: try r.u64(),
                point: try r.u64(),
                time: Timestamp(nanoseconds: Int64(bitPattern: try r.u64()))
            )
        case .commitFailed:
            message = .commitFailed(sequence: try r.u64(), code: try r.string(), message: try r.string())
        case .status:
            let stateByte = try r.u8()
            guard let state = ReplicationState(rawValue: stateByte) else {
                throw LifeboatError.malformed("unknown replication state \(stateByte)")
            }
            message = .status(
                state: state,
                backlogBytes: try r.u64(),
                syncedBytes: try r.u64(),
                totalBytes: try r.u64(),
                reason: try r.string()
            )
        case .settings:
            message = .settings(try r.settings())
        case .ping:
            message = .ping(nonce: try r.u64())
        case .pong:
            message = .pong(nonce: try r.u64())
        case .error:
            message = .error(code: try r.string(), message: try r.string())
        case .goodbye:
            message = .goodbye
        case .enroll:
            message = .enroll(token: try r.string(), machine: try r.string(), csr: try r.blob())
        case .enrolled:
            message = .enrolled(certificate: try r.blob(), ca: try r.blob())
        }
        guard r.isAtEnd else {
            throw LifeboatError.malformed("\(type) frame has \(r.remaining) trailing bytes")
        }
        return message
    }
}

/// Splits a byte stream into frames and decodes them. Feed it whatever the transport delivers; it never
/// buffers more than one frame, and rejects a frame longer than `FrameCodec.maxFrameLength` before
/// reading it.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    public init() {}

    /// Bytes received but not yet decoded.
    public var pendingBytes: Int { buffer.count - start }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete message, or nil when more bytes are needed. Throws on a malformed frame; the
    /// connection must then be closed.
    public mutating func next() throws -> Message? {
        guard buffer.count - start >= 4 else { return nil }
        let length =
            Int(buffer[start]) << 24 | Int(buffer[start + 1]) << 16 | Int(buffer[start + 2]) << 8 | Int(buffer[start + 3])
        guard length >= 1 else { throw LifeboatError.malformed("empty frame") }
        guard length <= FrameCodec.maxFrameLength else {
            throw LifeboatError.malformed("frame of \(length) bytes exceeds the limit of \(FrameCodec.maxFrameLength)")
        }
        guard buffer.count - start - 4 >= length else { return nil }
        let frame = buffer[(start + 4)..<(start + 4 + length)]
        start += 4 + length
        if start > 1 << 20 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        return try FrameCodec.decode(frame: frame)
    }
}

struct WireWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8.prefix(FrameCodec.maxString))
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    mutating func volumes(_ list: [VolumeInfo]) {
        u16(UInt16(min(list.count, FrameCodec.maxVolumes)))
        for v in list.prefix(FrameCodec.maxVolumes) {
            string(v.name)
            u64(UInt64(bitPattern: v.size))
            u64(v.baseEpoch)
        }
    }
    mutating func blob(_ b: [UInt8]) {
        let n = min(b.count, FrameCodec.maxBlob)
        u16(UInt16(n))
        bytes.append(contentsOf: b.prefix(n))
    }
    mutating func settings(_ s: AgentSettings) {
        u32(s.throttleMbps)
        u32(s.maxFreezeMilliseconds)
        u32(s.keepaliveMilliseconds)
        u32(s.paused ? AgentSettings.pausedFlag : 0)
    }
}

/// Reads a frame body in place; valid only while the bytes it reads are.
struct WireReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var remaining: Int { bytes.count - position }
    var isAtEnd: Bool { position == bytes.count }

    mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard remaining >= n else { throw LifeboatError.malformed("frame is truncated") }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
        var v: T = 0
        for b in try take(MemoryLayout<T>.size) { v = v << 8 | T(b) }
        return v
    }

    mutating func u8() throws -> UInt8 { try integer(UInt8.self) }
    mutating func u16() throws -> UInt16 { try integer(UInt16.self) }
    mutating func u32() throws -> UInt32 { try integer(UInt32.self) }
    mutating func u64() throws -> UInt64 { try integer(UInt64.self) }

    mutating func string() throws -> String {
        let n = Int(try u16())
        guard n <= FrameCodec.maxString else { throw LifeboatError.malformed("string of \(n) bytes is too long") }
        let raw = try take(n)
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw LifeboatError.malformed("string is not valid UTF-8")
        }
        return s
    }

    mutating func volumes() throws -> [VolumeInfo] {
        let n = Int(try u16())
        guard n <= FrameCodec.maxVolumes else { throw LifeboatError.malformed("\(n) volumes is too many") }
        var out: [VolumeInfo] = []
        for _ in 0..<n {
            let name = try string()
            let size = Int64(bitPattern: try u64())
            guard size >= 0 else { throw LifeboatError.malformed("volume \(name) has a negative size") }
            out.append(VolumeInfo(name: name, size: size, baseEpoch: try u64()))
        }
        return out
    }

    mutating func blob() throws -> [UInt8] {
        let n = Int(try u16())
        guard n <= FrameCodec.maxBlob else { throw LifeboatError.malformed("a blob of \(n) bytes is too long") }
        return Array(try take(n))
    }

    mutating func settings() throws -> AgentSettings {
        let throttle = try u32(), maxFreeze = try u32(), keepalive = try u32(), flags = try u32()
        guard flags & ~AgentSettings.pausedFlag == 0 else {
            throw LifeboatError.malformed("settings carry unknown flags \(flags)")
        }
        return AgentSettings(
            throttleMbps: throttle,
            maxFreezeMilliseconds: maxFreeze,
            keepaliveMilliseconds: keepalive,
            paused: flags & AgentSettings.pausedFlag != 0
        )
    }

    mutating func rest() -> [UInt8] {
        defer { position = bytes.count }
        return Array(UnsafeRawBufferPointer(rebasing: bytes[position...]))
    }
}

extension AgentSettings {
    /// Bit 0 of the settings' flags word.
    static let pausedFlag: UInt32 = 1
}
