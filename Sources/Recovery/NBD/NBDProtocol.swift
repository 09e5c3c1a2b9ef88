/// Constants of the NBD protocol, fixed newstyle (`NetworkBlockDevice/nbd:doc/proto.md`). All integers on the
/// wire are big-endian.
public enum NBD {
    // MARK: Handshake

    /// "NBDMAGIC": the first eight bytes the server sends.
    public static let initialMagic: UInt64 = 0x4E42_444D_4147_4943
    /// "IHAVEOPT": follows the initial magic, and starts every option request.
    public static let optionMagic: UInt64 = 0x4948_4156_454F_5054
    /// Starts every option reply.
    public static let optionReplyMagic: UInt64 = 0x0003_E889_0455_65A9

    /// Handshake flags the server sends.
    public enum HandshakeFlags {
        public static let fixedNewstyle: UInt16 = 1 << 0
        public static let noZeroes: UInt16 = 1 << 1
    }

    /// Client flags, the client's answer to the handshake flags.
    public enum ClientFlags {
        public static let fixedNewstyle: UInt32 = 1 << 0
        public static let noZeroes: UInt32 = 1 << 1
        public static let known: UInt32 = fixedNewstyle | noZeroes
    }

    /// Option codes.
    public enum Option {
        public static let exportName: UInt32 = 1
        public static let abort: UInt32 = 2
        public static let list: UInt32 = 3
        public static let peekExport: UInt32 = 4
        public static let startTLS: UInt32 = 5
        public static let info: UInt32 = 6
        public static let go: UInt32 = 7
        public static let structuredReply: UInt32 = 8
        public static let listMetaContext: UInt32 = 9
        public static let setMetaContext: UInt32 = 10
        public static let extendedHeaders: UInt32 = 11
    }

    /// Option reply types; errors have bit 31 set.
    public enum Reply {
        public static let ack: UInt32 = 1
        public static let server: UInt32 = 2
        public static let info: UInt32 = 3
        public static let metaContext: UInt32 = 4
        public static let errorUnsupported: UInt32 = 0x8000_0001
        public static let errorPolicy: UInt32 = 0x8000_0002
        public static let errorInvalid: UInt32 = 0x8000_0003
        public static let errorPlatform: UInt32 = 0x8000_0004
        public static let errorTLSRequired: UInt32 = 0x8000_0005
        public static let errorUnknown: UInt32 = 0x8000_0006
        public static let errorShutdown: UInt32 = 0x8000_0007
        public static let errorBlockSizeRequired: UInt32 = 0x8000_0008
        public static let errorTooBig: UInt32 = 0x8000_0009
    }

    /// Information types of `NBD_REP_INFO`.
    public enum Info {
        public static let export: UInt16 = 0
        public static let name: UInt16 = 1
        public static let description: UInt16 = 2
        public static let blockSize: UInt16 = 3
    }

    /// Transmission flags of an export.
    public enum TransmissionFlags {
        public static let hasFlags: UInt16 = 1 << 0
        public static let readOnly: UInt16 = 1 << 1
        public static let sendFlush: UInt16 = 1 << 2
        public static let sendFUA: UInt16 = 1 << 3
        public static let rotational: UInt16 = 1 << 4
        public static let sendTrim: UInt16 = 1 << 5
        public static let sendWriteZeroes: UInt16 = 1 << 6
        public static let sendDF: UInt16 = 1 << 7
        public static let canMultiConn: UInt16 = 1 << 8
        public static let sendCache: UInt16 = 1 << 10
        public static let sendFastZero: UInt16 = 1 << 11
    }

    // MARK: Transmission

    public static let requestMagic: UInt32 = 0x2560_9513
    public static let simpleReplyMagic: UInt32 = 0x6744_6698
    public static let structuredReplyMagic: UInt32 = 0x668E_33EF
    /// The size of a request header (without the payload of a WRITE).
    public static let requestHeaderSize = 28

    /// Command types.
    public enum Command {
        public static let read: UInt16 = 0
        public static let write: UInt16 = 1
        public static let disconnect: UInt16 = 2
        public static let flush: UInt16 = 3
        public static let trim: UInt16 = 4
        public static let cache: UInt16 = 5
        public static let writeZeroes: UInt16 = 6
        public static let blockStatus: UInt16 = 7
    }

    /// Command flags.
    public enum CommandFlags {
        public static let fua: UInt16 = 1 << 0
        public static let noHole: UInt16 = 1 << 1
        public static let dontFragment: UInt16 = 1 << 2
        public static let requestOne: UInt16 = 1 << 3
        public static let fastZero: UInt16 = 1 << 4
    }

    /// Structured reply chunk types and flags.
    public enum Chunk {
        public static let flagDone: UInt16 = 1 << 0
        public static let none: UInt16 = 0
        public static let offsetData: UInt16 = 1
        public static let offsetHole: UInt16 = 2
        public static let blockStatus: UInt16 = 5
        public static let error: UInt16 = 0x8001
        public static let errorOffset: UInt16 = 0x8002
    }

    /// Error values of replies (Linux errno numbers, as the protocol fixes them).
    public enum ReplyError {
        public static let permission: UInt32 = 1
        public static let io: UInt32 = 5
        public static let noMemory: UInt32 = 12
        public static let invalid: UInt32 = 22
        public static let noSpace: UInt32 = 28
        public static let overflow: UInt32 = 75
        public static let notSupported: UInt32 = 95
        public static let shutdown: UInt32 = 108
    }

    /// Flags of the `base:allocation` meta context.
    public enum Allocation {
        public static let hole: UInt32 = 1 << 0
        public static let zero: UInt32 = 1 << 1
    }

    /// The one meta context this server offers.
    public static let baseAllocation = "base:allocation"
    /// The id the server gives `base:allocation` when a client selects it.
    public static let baseAllocationID: UInt32 = 1

    // MARK: Limits

    /// The largest option a client may send; longer ones close the connection (a name is at most 4 KiB).
    public static let maxOptionLength = 64 * 1024
    /// The largest READ or WRITE payload the server accepts (advertised in `NBD_INFO_BLOCK_SIZE`).
    public static let maxPayload = 32 * 1024 * 1024
    /// The preferred block size advertised.
    public static let preferredBlockSize: UInt32 = 4096
}
