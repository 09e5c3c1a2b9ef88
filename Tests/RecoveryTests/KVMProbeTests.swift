#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Testing

@testable import Recovery

@Suite("KVM probe: KVM when a vCPU runs, TCG otherwise, never a hang")
struct KVMProbeTests {
    @Test("detect returns within its timeout plus a second, whatever /dev/kvm does on this host")
    func returnsInTime() {
        let clock = ContinuousClock()
        let timeout = Duration.seconds(2)
        let start = clock.now
        let outcome = KVMProbe.probe(timeout: timeout)
        let elapsed = clock.now - start
        print("KVMProbe: \(outcome) → \(outcome.accelerator) in \(elapsed)")
        #expect(elapsed < timeout + .seconds(1), "the probe took \(elapsed): \(outcome)")
        // A second call (a hung probe thread may still be around) answers as fast.
        let again = clock.now
        let accelerator = KVMProbe.detect(timeout: timeout)
        #expect(clock.now - again < timeout + .seconds(1))
        if outcome == .usable { #expect(accelerator == .kvm) } else { #expect(accelerator == .tcg) }
    }

    @Test("the tiny VM itself (CPU flag check skipped) answers or times out within its timeout plus a second")
    func tinyVMInTime() {
        let clock = ContinuousClock()
        let timeout = Duration.seconds(2)
        let start = clock.now
        let outcome = KVMProbe.probe(timeout: timeout, device: "/dev/kvm", checkCPUFlags: false)
        let elapsed = clock.now - start
        print("KVMProbe tiny VM: \(outcome) in \(elapsed)")
        #expect(elapsed < timeout + .seconds(1), "the probe took \(elapsed): \(outcome)")
    }

    @Test("a missing device means TCG, at once")
    func missingDevice() {
        let clock = ContinuousClock()
        let start = clock.now
        #expect(KVMProbe.probe(timeout: .seconds(2), device: "/dev/lifeboat-no-such-kvm") == .missing)
        #expect(KVMProbe.detect(timeout: .seconds(2), device: "/dev/lifeboat-no-such-kvm") == .tcg)
        #expect(clock.now - start < .seconds(1))
    }

    @Test("a device that is not KVM fails the probe and means TCG")
    func notKVM() {
        let outcome = KVMProbe.probe(timeout: .seconds(2), device: "/dev/null")
        #expect(outcome.accelerator == .tcg)
        if case .usable = outcome { Issue.record("/dev/null was taken for KVM") }
    }

    @Test("the CPU flags of /proc/cpuinfo are read")
    func cpuFlags() throws {
        let flags = try #require(KVMProbe.cpuFlags())
        #expect(flags.contains("fpu"), "x86 CPUs list fpu; got \(flags.count) flags")
    }
}
