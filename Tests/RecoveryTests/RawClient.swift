#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import LifeboatCore
import NIOCore
import Recovery

/// A minimal blocking NBD client on a plain socket, for what real clients cannot do on purpose: send
/// garbage, or a WRITE to a read-only export.
final class RawClient {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LifeboatError("test.socket", "socket failed: errno \(errno)") }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard ok == 0 else {
            Glibc.close(fd)
            throw LifeboatError("test.socket", "connect to port \(port) failed: errno \(errno)")
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ buffer: ByteBuffer) throws {
        let bytes = Array(buffer.readableBytesView)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw LifeboatError("test.socket", "send failed: errno \(errno)") }
            done += n
        }
    }

    /// Exactly `count` bytes, or nil if the server closed the connection first.
    func receive(_ count: Int) throws -> ByteBuffer? {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes[done...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return nil }
            guard n > 0 else { throw LifeboatError("test.socket", "recv failed: errno \(errno)") }
            done += n
        }
        return ByteBuffer(bytes: bytes)
    }

    /// Whether the server closed the connection (reads until end of stream).
    func isClosedByServer() throws -> Bool {
        var byte: UInt8 = 0
        while true {
            let n = recv(fd, &byte, 1, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    /// Greeting, flags, GO without structured replies; returns the export size.
    func handshake(export: String) throws -> UInt64 {
        guard var greeting = try receive(18) else { throw LifeboatError("test.nbd", "no greeting") }
        guard greeting.readInteger(as: UInt64.self) == NBD.initialMagic else { throw LifeboatError("test.nbd", "bad greeting") }
        try send(Client.flags())
        try send(Client.option(NBD.Option.go, Client.infoData(export)))
        var size: UInt64 = 0
        while true {
            guard var header = try receive(20) else { throw LifeboatError("test.nbd", "closed during GO") }
            header.moveReaderIndex(forwardBy: 12)
            let type: UInt32 = header.readInteger()!
            let length: UInt32 = header.readInteger()!
            var data = try receive(Int(length)) ?? ByteBuffer()
            if type == NBD.Reply.ack { return size }
            guard type == NBD.Reply.info else { throw LifeboatError("test.nbd", "GO failed with reply type \(type)") }
            if data.readInteger(as: UInt16.self) == NBD.Info.export { size = data.readInteger()! }
        }
    }

    /// Sends a request and reads a simple reply; returns the error and any READ data.
    func request(_ r: NBDRequest, payload: [UInt8]? = nil) throws -> (error: UInt32, data: [UInt8])? {
        var b = ByteBuffer()
        NBDWire.encode(r, payload: payload.map { ByteBuffer(bytes: $0) }, into: &b)
        try send(b)
        guard var reply = try receive(16) else { return nil }
        guard reply.readInteger(as: UInt32.self) == NBD.simpleReplyMagic else { throw LifeboatError("test.nbd", "bad reply") }
        let error: UInt32 = reply.readInteger()!
        guard reply.readInteger(as: UInt64.self) == r.cookie else { throw LifeboatError("test.nbd", "wrong cookie") }
        if error == 0 && r.type == NBD.Command.read {
            guard let data = try receive(Int(r.length)) else { return nil }
            return (0, Array(data.readableBytesView))
        }
        return (error, [])
    }
}
