import Testing

@testable import Agent

/// The chooser fed with simulated deliveries: 1 MiB pieces, each delivered after the time a link or a CPU of the
/// given speed needs for it.
private struct SimulatedSend {
    var chooser: CompressionChooser
    /// Seconds per raw MiB delivered, compressed and raw (what the real loop would measure).
    var compressedSeconds: Double
    var rawSeconds: Double
    var compressedPieces = 0
    var rawPieces = 0

    init(_ mode: WireCompression, compressedSeconds: Double, rawSeconds: Double) {
        chooser = CompressionChooser(mode: mode)
        self.compressedSeconds = compressedSeconds
        self.rawSeconds = rawSeconds
    }

    /// Sends `mib` pieces with 8 read ahead (decided before earlier ones are delivered, as in the agent).
    mutating func send(mib: Int) {
        var ahead: [Bool] = []
        for _ in 0..<8 { ahead.append(chooser.next()) }
        for _ in 0..<mib {
            let compressed = ahead.removeFirst()
            ahead.append(chooser.next())
            if compressed { compressedPieces += 1 } else { rawPieces += 1 }
            let seconds = compressed ? compressedSeconds : rawSeconds
            chooser.delivered(bytes: 1 << 20, in: .nanoseconds(Int64(seconds * 1e9)), compressed: compressed)
        }
    }
}

@Suite("Wire compression chooser: compress only when it delivers more bytes per second")
struct CompressionChooserTests {
    @Test("a fast link with a busy CPU: raw after measuring both ways, the other way retried ever more rarely")
    func fastLinkSendsRaw() {
        // Compression at 200 MB/s, the link carries raw bytes at 600 MB/s.
        var send = SimulatedSend(.auto, compressedSeconds: 1 / 200.0, rawSeconds: 1 / 600.0)
        send.send(mib: 4096)
        #expect(send.chooser.rate[true] != nil && send.chooser.rate[false] != nil)
        // Raw is the way it sends (it may be in one of its rare exploring epochs right now).
        #expect(send.chooser.rate[false]! > send.chooser.rate[true]!)
        let share = Double(send.compressedPieces) / 4096
        #expect(share < 0.06, "\(send.compressedPieces) of 4096 pieces compressed")
        #expect(send.compressedPieces >= 32, "both ways measured")
    }

    @Test("a slow start (the first 32 MiB at a quarter of the speed) does not make it compress on a fast link")
    func slowStartDoesNotMislead() {
        var send = SimulatedSend(.auto, compressedSeconds: 1 / 200.0, rawSeconds: 4 / 600.0)
        send.send(mib: 32)
        send.rawSeconds = 1 / 600.0
        send.send(mib: 1408)
        #expect(send.chooser.rate[false]! > send.chooser.rate[true]!)
        // One epoch to measure compression, then one exploring epoch after 8 and one after 16 more: 3 of 45,
        // each with the 8 pieces read ahead when it ends.
        #expect(send.compressedPieces <= 3 * (32 + 8), "\(send.compressedPieces) of 1440 pieces compressed")
    }

    @Test("a slow or throttled link: compressed after measuring both ways")
    func slowLinkCompresses() {
        // 1 Gbit/s link: raw 125 MB/s; compressed (2.5× smaller) 300 MB/s, limited by the CPU.
        var send = SimulatedSend(.auto, compressedSeconds: 1 / 300.0, rawSeconds: 1 / 125.0)
        send.send(mib: 4096)
        #expect(send.chooser.compressing)
        #expect(Double(send.rawPieces) / 4096 < 0.06, "\(send.rawPieces) of 4096 pieces raw")
    }

    @Test("when conditions change it follows within a few exploration intervals")
    func followsChanges() {
        var send = SimulatedSend(.auto, compressedSeconds: 1 / 200.0, rawSeconds: 1 / 600.0)
        send.send(mib: 2048)
        #expect(!send.chooser.compressing)
        // The link becomes slow (a WAN, a throttle).
        send.rawSeconds = 1 / 50.0
        send.send(mib: 8192)
        #expect(send.chooser.compressing)
    }

    @Test("always and never do not measure")
    func fixedModes() {
        var always = SimulatedSend(.always, compressedSeconds: 1, rawSeconds: 0.001)
        always.send(mib: 512)
        #expect(always.rawPieces == 0)
        var never = SimulatedSend(.never, compressedSeconds: 0.001, rawSeconds: 1)
        never.send(mib: 512)
        #expect(never.compressedPieces == 0)
        #expect(never.chooser.rate.isEmpty)
    }
}
