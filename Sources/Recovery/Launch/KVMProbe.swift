#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import Dispatch
import LifeboatCore

/// How QEMU runs a recovery machine: hardware virtualization, or QEMU's portable (and slower) translator.
public enum Accelerator: String, Sendable, CaseIterable {
    case kvm
    case tcg

    /// The value of QEMU's `-accel` option.
    public var qemuName: String { rawValue }
}

/// Decides whether KVM is usable on this host, without ever hanging the caller.
///
/// `/dev/kvm` existing proves little. A host without the `vmx` or `svm` CPU flag may still have it (a software
/// KVM such as `kvm_pvm` in a nested sandbox, which only runs specially built guests: a BIOS boot dies with
/// "emulation failure"), and on some hosts (nested virtualization, broken firmware, a sandbox) opening it or
/// running a vCPU blocks forever. So the probe checks the CPU flags, then runs a real, tiny virtual machine on
/// its own thread while the caller waits at most `timeout`: `KVM_GET_API_VERSION` (must be 12), `KVM_CREATE_VM`,
/// one page of guest memory holding `hlt`, `KVM_CREATE_VCPU`, `KVM_RUN` until the exit reason is `KVM_EXIT_HLT`.
///
/// A probe thread that hangs in the kernel cannot be cancelled; it is left behind, and while it is still
/// stuck every later `detect` answers `.tcg` at once instead of starting another one.
public enum KVMProbe {
    /// What the probe found, with a reason fit for a log line.
    public enum Outcome: Sendable, Equatable, CustomStringConvertible {
        /// A vCPU ran to its `hlt`.
        case usable
        /// No `/dev/kvm` (no module, or not passed into this container).
        case missing
        /// A step failed: which one and why.
        case failed(String)
        /// The probe did not finish within the timeout (it is still blocked).
        case timedOut(Duration)

        public var accelerator: Accelerator { self == .usable ? .kvm : .tcg }

        public var description: String {
            switch self {
            case .usable: "KVM is usable"
            case .missing: "/dev/kvm does not exist"
            case .failed(let why): "KVM is not usable: \(why)"
            case .timedOut(let after): "KVM probe did not answer within \(after) (it hangs on this host)"
            }
        }
    }

    /// `.kvm` when a vCPU runs within `timeout`, `.tcg` otherwise (missing, failing or hanging KVM).
    public static func detect(timeout: Duration = .seconds(3), device: String = "/dev/kvm") -> Accelerator {
        probe(timeout: timeout, device: device).accelerator
    }

    /// Runs the probe on its own thread and waits at most `timeout` for its answer.
    public static func probe(timeout: Duration = .seconds(3), device: String = "/dev/kvm") -> Outcome {
        probe(timeout: timeout, device: device, checkCPUFlags: true)
    }

    /// `checkCPUFlags: false` lets tests run the tiny VM on a host whose flags already rule KVM out.
    static func probe(timeout: Duration, device: String, checkCPUFlags: Bool) -> Outcome {
        guard access(device, F_OK) == 0 else { return .missing }
        if checkCPUFlags, let flags = cpuFlags(), !flags.contains("vmx"), !flags.contains("svm") {
            return .failed(
                "the CPU shows neither vmx nor svm: \(device) is a software KVM (such as kvm_pvm) that cannot run an ordinary guest"
            )
        }
        if stuck.value { return .timedOut(.zero) }

        let box = ProbeBox(device: device)
        let context = Unmanaged.passRetained(box).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread,
            nil,
            { raw in
                let box = Unmanaged<ProbeBox>.fromOpaque(raw!).takeRetainedValue()
                box.outcome = KVMProbe.runTinyVM(device: box.device)
                box.done.signal()
                KVMProbe.stuck.value = false
                return nil
            },
            context
        )
        guard rc == 0 else {
            Unmanaged<ProbeBox>.fromOpaque(context).release()
            return .failed("cannot start the probe thread (error \(rc))")
        }
        pthread_detach(thread)
        let (seconds, attoseconds) = max(timeout, .zero).components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        if box.done.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .timedOut {
            stuck.value = true
            // The thread may have finished between the wait and the flag: then it is not stuck after all.
            if box.done.wait(timeout: .now()) == .success {
                stuck.value = false
                return box.outcome ?? .failed("the probe ended without an answer")
            }
            return .timedOut(timeout)
        }
        return box.outcome ?? .failed("the probe ended without an answer")
    }

    /// True while a probe thread is blocked in the kernel.
    static let stuck = LockedValue(false)

    /// The tiny VM; runs on the probe thread and may block forever.
    static func runTinyVM(device: String) -> Outcome {
        let kvm = open(device, O_RDWR | O_CLOEXEC)
        guard kvm >= 0 else { return .failed("open \(device): \(errorText())") }
        defer { close(kvm) }

        let version = ioctl(kvm, Request.getAPIVersion)
        guard version == 12 else {
            return .failed(version < 0 ? "KVM_GET_API_VERSION: \(errorText())" : "KVM API version \(version), want 12")
        }
        let vm = ioctl(kvm, Request.createVM, CInt(0))
        guard vm >= 0 else { return .failed("KVM_CREATE_VM: \(errorText())") }
        defer { close(vm) }

        // One page of guest memory at guest-physical 0x1000 holding `hlt`.
        let pageSize = 4096
        guard let memory = mmap(nil, pageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            memory != MAP_FAILED
        else { return .failed("mmap of guest memory: \(errorText())") }
        defer { munmap(memory, pageSize) }
        memory.storeBytes(of: 0xF4, as: UInt8.self)  // hlt
        var region = UserspaceMemoryRegion(
            slot: 0,
            flags: 0,
            guestPhysicalAddress: 0x1000,
            memorySize: UInt64(pageSize),
            userspaceAddress: UInt64(UInt(bitPattern: memory))
        )
        guard ioctl(vm, Request.setUserMemoryRegion, &region) == 0 else {
            return .failed("KVM_SET_USER_MEMORY_REGION: \(errorText())")
        }

        let vcpu = ioctl(vm, Request.createVCPU, CInt(0))
        guard vcpu >= 0 else { return .failed("KVM_CREATE_VCPU: \(errorText())") }
        defer { close(vcpu) }
        let runSize = ioctl(kvm, Request.getVCPUMmapSize)
        guard runSize > 0 else { return .failed("KVM_GET_VCPU_MMAP_SIZE: \(errorText())") }
        guard let run = mmap(nil, Int(runSize), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0), run != MAP_FAILED else {
            return .failed("mmap of the vCPU run area: \(errorText())")
        }
        defer { munmap(run, Int(runSize)) }

        // Real mode with a flat code segment at 0, instruction pointer on the `hlt`.
        var sregs = [UInt8](repeating: 0, count: Layout.sregsSize)
        guard sregs.withUnsafeMutableBytes({ ioctl(vcpu, Request.getSregs, $0.baseAddress!) }) == 0 else {
            return .failed("KVM_GET_SREGS: \(errorText())")
        }
        sregs.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: UInt64(0), toByteOffset: Layout.csBase, as: UInt64.self)
            bytes.storeBytes(of: UInt16(0), toByteOffset: Layout.csSelector, as: UInt16.self)
        }
        guard sregs.withUnsafeMutableBytes({ ioctl(vcpu, Request.setSregs, $0.baseAddress!) }) == 0 else {
            return .failed("KVM_SET_SREGS: \(errorText())")
        }
        var regs = [UInt64](repeating: 0, count: Layout.regsCount)
        regs[Layout.ripIndex] = 0x1000
        regs[Layout.rflagsIndex] = 0x2  // bit 1 is always set
        guard regs.withUnsafeMutableBytes({ ioctl(vcpu, Request.setRegs, $0.baseAddress!) }) == 0 else {
            return .failed("KVM_SET_REGS: \(errorText())")
        }

        guard ioctl(vcpu, Request.run, CInt(0)) == 0 else { return .failed("KVM_RUN: \(errorText())") }
        let exitReason = run.load(fromByteOffset: Layout.exitReason, as: UInt32.self)
        guard exitReason == Layout.exitHLT else {
            return .failed("KVM_RUN exited with reason \(exitReason), expected HLT (\(Layout.exitHLT))")
        }
        return .usable
    }

    /// The `flags` of the first processor in /proc/cpuinfo, or nil when it cannot be read (then the tiny VM decides).
    static func cpuFlags(path: String = "/proc/cpuinfo") -> Set<Substring>? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > 1 << 20 { break }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " "))
        }
        return nil
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }

    /// ioctl numbers from <linux/kvm.h> (KVMIO = 0xAE).
    enum Request {
        static let getAPIVersion: UInt = 0xAE00
        static let createVM: UInt = 0xAE01
        static let getVCPUMmapSize: UInt = 0xAE04
        static let createVCPU: UInt = 0xAE41
        /// _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region) — 32 bytes.
        static let setUserMemoryRegion: UInt = 0x4020_AE46
        static let run: UInt = 0xAE80
        /// _IOW(KVMIO, 0x82, struct kvm_regs) — 144 bytes.
        static let setRegs: UInt = 0x4090_AE82
        /// _IOR(KVMIO, 0x83, struct kvm_sregs) — 312 bytes.
        static let getSregs: UInt = 0x8138_AE83
        /// _IOW(KVMIO, 0x84, struct kvm_sregs).
        static let setSregs: UInt = 0x4138_AE84
    }

    /// x86-64 layouts of the structures the probe touches.
    enum Layout {
        static let sregsSize = 312
        /// `kvm_sregs.cs` is the first member: `base` (u64) at 0, `limit` (u32) at 8, `selector` (u16) at 12.
        static let csBase = 0
        static let csSelector = 12
        /// `kvm_regs`: 18 × u64, rip and rflags last.
        static let regsCount = 18
        static let ripIndex = 16
        static let rflagsIndex = 17
        /// `kvm_run.exit_reason` (u32) follows two u8 flags and six bytes of padding.
        static let exitReason = 8
        static let exitHLT: UInt32 = 5
    }

    /// `struct kvm_userspace_memory_region`.
    struct UserspaceMemoryRegion {
        var slot: UInt32
        var flags: UInt32
        var guestPhysicalAddress: UInt64
        var memorySize: UInt64
        var userspaceAddress: UInt64
    }
}

/// Hands the device path to the probe thread and its answer back.
private final class ProbeBox: @unchecked Sendable {
    let device: String
    let done = DispatchSemaphore(value: 0)
    /// Written by the probe thread before `done` is signalled, read by the caller after.
    var outcome: KVMProbe.Outcome?

    init(device: String) { self.device = device }
}
