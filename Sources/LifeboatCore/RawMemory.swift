/// Byte fills and copies for use inside throwing functions.
///
/// Swift 6.3 on x86_64 miscompiles a throwing function whose success path ends in a tail call to
/// memset/memcpy/memmove (swiftlang/swift#90477, fixed in swiftlang/llvm-project#13691): the register that
/// carries the error is not restored, so the caller sees a phantom error and crashes. A throwing function must
/// not end in an inlined fill or copy; it calls these never-inlined, non-throwing functions instead, which the
/// code generator does not tail-call from a throwing function. `scripts/check-release-binary` finds any
/// function of a release build that still has the pattern.
public enum RawMemory {
    /// Sets every byte of `buffer` to zero.
    @inline(never)
    public static func zero(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        base.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count)
    }

    /// Copies `source` to the start of `destination`, which must be at least as large.
    @inline(never)
    public static func copy(_ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawBufferPointer) {
        precondition(source.count <= destination.count, "copy of \(source.count) bytes into \(destination.count)")
        guard let from = source.baseAddress, let to = destination.baseAddress, source.count > 0 else { return }
        to.copyMemory(from: from, byteCount: source.count)
    }

    /// True when every byte is zero. Reads eight bytes at a time and stops at the first non-zero word.
    @inline(__always)
    public static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        let words = bytes.count / 8
        var i = 0
        while i < words {
            if base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            i += 1
        }
        var j = words * 8
        while j < bytes.count {
            if bytes[j] != 0 { return false }
            j += 1
        }
        return true
    }
}
