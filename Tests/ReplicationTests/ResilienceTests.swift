import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// DESIGN.md §5.1 under abuse: kill -9 the agent or the server at seeded random moments, cut the connection
/// (closed, or half-open), fill the server's disk. Every acknowledged commit stays intact and exact, no point is
/// corrupt (`store verify`), replication resumes without a full resync, and the catalog's replication state
/// goes through DISCONNECTED and STALLED and back to CONTINUOUS.
@Suite(.serialized)
struct ResilienceTests {
    static let imageSize = 16 * MiB
    /// A commit that changes this much of the volume after the initial sync counts as a full resync.
    static let resyncThreshold = imageSize / 4

    /// Every point listed after `firstIncremental` (0-based, in commit order) changed less than the threshold.
    static func expectNoFullResync(_ site: ReplicationSite, machine: String, after firstIncremental: Int, _ comment: String) throws {
        let commits = try site.changedBytes(machine: machine)
        for (index, commit) in commits.enumerated() where index >= firstIncremental {
            #expect(
                commit.bytes < resyncThreshold,
                "\(comment): point \(commit.point) (sequence \(commit.sequence)) changed \(commit.bytes) bytes of a \(imageSize)-byte volume: a full resync"
            )
        }
    }

    /// Every point the server logged as acknowledged is listed by the store.
    static func expectAcknowledgedListed(_ site: ReplicationSite, machine: String, _ comment: String) throws {
        let listed = Set(try site.points(machine: machine).compactMap { $0["point"] as? String })
        let acknowledged = site.acknowledgedPoints()
        let lost = acknowledged.filter { !listed.contains($0) }
        #expect(lost.isEmpty, "\(comment): acknowledged points missing from the store: \(lost)")
    }

    /// The server acknowledged every commit under the sequence number the agent gave it.
    static func expectSequencesAgree(_ site: ReplicationSite, _ comment: String) {
        let lines = site.log().split(separator: "\n").filter { $0.contains("store sequence differs from the agent's") }
        #expect(lines.isEmpty, "\(comment): the server acknowledged commits under another sequence than the store gave them: \(lines)")
    }

    static func expectIntact(_ site: ReplicationSite, _ expected: ExpectedPoints, machine: String, _ comment: String) throws {
        let problems = try expected.mismatches(site: site, machine: machine, volume: "disk")
        #expect(problems.isEmpty, "\(comment): \(problems)")
        let verify = try site.verify()
        #expect(verify.status == 0 && verify.stdout.contains("no damage found"), "\(comment): store verify: \(verify.stdout)\(verify.stderr)")
    }

    // MARK: - kill -9 of the agent

    enum AgentKill: CustomStringConvertible {
        /// Early: during the initial sync.
        case initialSync(delay: Double)
        /// After a seeded random time of activity.
        case random(delay: Double)
        /// While a commit is unacknowledged: pending.json exists (END_COMMIT about to be sent or sent), after a
        /// seeded random few milliseconds so that some kills land before and some after the server's commit.
        case pending(delay: Double)
        /// Right after an acknowledgement was processed (pending.json was just removed).
        case afterAck

        var description: String {
            switch self {
            case .initialSync(let d): "during the initial sync (\(Int(d * 1000)) ms)"
            case .random(let d): "at a random moment (\(Int(d * 1000)) ms)"
            case .pending(let d): "while a commit was unacknowledged (+\(Int(d * 1000)) ms)"
            case .afterAck: "right after an acknowledgement"
            }
        }
    }

    @Test("kill -9 of the agent at random moments: acknowledged points stay exact, restarts send only changes")
    func killAgent() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let state = try site.enroll("kill-agent")
        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: Self.imageSize, seed: 11))
        let expected = try ExpectedPoints(directory: site.dir.child("expected"))
        var writer = BlockWriter(image: image, size: Self.imageSize, seed: 12)
        var rng = SeededRandom(seed: 0x4B11_A6E7)
        let pendingFile = state + "/pending.json"

        var plan: [AgentKill] = [.initialSync(delay: 0.05 + Double(rng.below(250)) / 1000)]
        for round in 1..<8 {
            switch round % 3 {
            case 1: plan.append(.pending(delay: Double(rng.below(12)) / 1000))
            case 2: plan.append(.random(delay: 0.2 + Double(rng.below(1500)) / 1000))
            default: plan.append(round == 3 ? .afterAck : .pending(delay: Double(rng.below(12)) / 1000))
            }
        }

        var firstIncremental: Int?
        var killedWithPending = 0
        var landedUnacknowledged = 0
        for (round, kill) in plan.enumerated() {
            let agent = try AgentRunner(state: state, volumes: ["disk=" + image], log: site.dir.child("agent-\(round).log"))
            var killed = false
            var pendingSequence: UInt64?
            let deadline = Date().addingTimeInterval(20)
            let started = Date()
            var sawPending = false
            while !killed && Date() < deadline {
                switch kill {
                case .initialSync(let delay), .random(let delay):
                    if Date().timeIntervalSince(started) >= delay {
                        agent.kill9()
                        killed = true
                    }
                case .pending(let delay):
                    if FileTools.exists(pendingFile), let bytes = try? FileTools.read(pendingFile), !bytes.isEmpty {
                        if delay > 0 { sleep(seconds: delay) }
                        agent.kill9()
                        killed = true
                    }
                case .afterAck:
                    if FileTools.exists(pendingFile) {
                        sawPending = true
                    } else if sawPending {
                        agent.kill9()
                        killed = true
                    }
                }
                if killed { break }
                // Keep the machine busy between the checks (not during the initial sync's first moments).
                if case .initialSync = kill {} else if rng.below(20) == 0 { try writer.write(blocks: 1 + rng.below(3)) }
                usleep(500)
            }
            #expect(killed, "round \(round): the kill moment (\(kill)) never came: \(agent.text())")
            agent.kill9()
            if let bytes = try? FileTools.read(pendingFile),
                let json = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
            {
                pendingSequence = (json["sequence"] as? NSNumber)?.uint64Value
                killedWithPending += 1
            }
            // The server notices the dead agent's closed connection.
            var last: [String: Any]?
            let gone = poll(timeout: 30) {
                last = (try? site.machine("kill-agent")) ?? nil
                guard let last, last["connected"] as? Bool == false else { return false }
                // DISCONNECTED, unless the agent died before it ever connected.
                return last["state"] as? String == "DISCONNECTED" || last["lastSeen"] is NSNull
            }
            #expect(gone, "round \(round) (\(kill)): after the agent was killed: \(String(describing: last))")
            let lastCommitted = try site.points(machine: "kill-agent").last?["sequence"] as? Int
            if let pendingSequence, let lastCommitted, UInt64(lastCommitted) >= pendingSequence { landedUnacknowledged += 1 }

            // Writes stop; one `--once` cycle gives an acknowledged point of the image as it is now.
            let once = try site.agentOnce(state: state, volumes: ["disk=" + image])
            try #require(once.status == 0, "round \(round) (\(kill)): agent --once failed: \(once.stderr)\n\(site.log())")
            let point = try #require(
                once.stdout.split(separator: " ").firstIndex(of: "point").map { String(once.stdout.split(separator: " ")[$0 + 1]) },
                "\(once.stdout)"
            )
            #expect(once.stdout.contains("committed"), "\(once.stdout)")
            try expected.record(point: point, image: image)
            if firstIncremental == nil {
                // From here on the initial sync is acknowledged: no commit may send the whole volume again.
                firstIncremental = try site.points(machine: "kill-agent").count
            } else {
                let sent = try site.changedBytes(machine: "kill-agent").last { $0.point == point }
                #expect(
                    (sent?.bytes ?? Int.max) < Self.resyncThreshold,
                    "round \(round) (\(kill)): the restart sent \(sent?.bytes ?? -1) bytes: \(once.stdout)"
                )
            }
            try Self.expectIntact(site, expected, machine: "kill-agent", "after round \(round) (\(kill))")
            try Self.expectAcknowledgedListed(site, machine: "kill-agent", "after round \(round)")
        }
        try Self.expectNoFullResync(site, machine: "kill-agent", after: firstIncremental ?? 0, "agent kills")
        Self.expectSequencesAgree(site, "agent kills")
        #expect(killedWithPending >= 2, "few kills hit an unacknowledged commit (\(killedWithPending))")
        print("agent kills: \(plan.count), with a commit unacknowledged: \(killedWithPending), of which had landed: \(landedUnacknowledged); "
            + "points: \(try site.points(machine: "kill-agent").count), blocks written: \(writer.blocksWritten)")
    }

    // MARK: - kill -9 of the server

    @Test("kill -9 of the server during activity: the agent reconnects by itself, acknowledged points survive")
    func killServer() throws {
        let site = try ReplicationSite()
        try site.startServer()
        defer { site.stopServer() }
        let machine = "kill-server"
        let state = try site.enroll(machine)
        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: Self.imageSize, seed: 21))
        let expected = try ExpectedPoints(directory: site.dir.child("expected"))
        var writer = BlockWriter(image: image, size: Self.imageSize, seed: 22)
        var rng = SeededRandom(seed: 0x5E7E_12)
        let agent = try AgentRunner(state: state, volumes: ["disk=" + image], log: site.dir.child("agent.log"))
        defer { agent.kill9() }

        let first = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        try expected.record(point: try #require(first, "no initial sync: \(agent.text())\n\(site.log())"), image: image)
        let firstIncremental = try site.points(machine: machine).count
        #expect(site.waitForState(machine, "CONTINUOUS", connected: true).ok)

        let pendingFile = state + "/pending.json"
        for round in 0..<4 {
            // Writes while the agent replicates; the server dies at a seeded moment: after a random time, or while
            // a commit is unacknowledged (the agent wrote pending.json and sent or is sending END_COMMIT).
            let whilePending = round % 2 == 1
            let delay = 0.2 + Double(rng.below(1200)) / 1000
            let started = Date()
            var killed = false
            while !killed && Date().timeIntervalSince(started) < 20 {
                if rng.below(10) == 0 { try writer.write(blocks: 1 + rng.below(4)) }
                if whilePending ? FileTools.exists(pendingFile) : Date().timeIntervalSince(started) >= delay {
                    if whilePending { usleep(UInt32(rng.below(8000))) }
                    site.stopServer(signal: SIGKILL)
                    killed = true
                }
                usleep(1000)
            }
            #expect(killed, "round \(round): no kill moment came")
            let acknowledgedBefore = Set(site.acknowledgedPoints())
            try writer.write(blocks: 8 + rng.below(16))  // the machine keeps changing while the server is down
            try site.startServer()

            // The agent reconnects on its own and catches up.
            let back = site.waitForState(machine, "CONTINUOUS", connected: true, timeout: 60)
            #expect(back.ok, "round \(round): the machine did not return to CONTINUOUS: \(String(describing: back.last))\n\(agent.text())")
            #expect(agent.isRunning, "round \(round): the agent exited: \(agent.text())")
            let listed = Set(try site.points(machine: machine).compactMap { $0["point"] as? String })
            #expect(acknowledgedBefore.subtracting(listed).isEmpty, "round \(round): acknowledged before the kill, gone after: \(acknowledgedBefore.subtracting(listed))")

            let caught = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
            #expect(caught != nil, "round \(round): the changes made around the kill never arrived")
            if let caught { try expected.record(point: caught, image: image) }
            try Self.expectIntact(site, expected, machine: machine, "after server kill \(round)")
        }
        try Self.expectAcknowledgedListed(site, machine: machine, "after the server kills")
        Self.expectSequencesAgree(site, "after the server kills")
        try Self.expectNoFullResync(site, machine: machine, after: firstIncremental, "server kills")

        // Reconnect delays start at 0.5 s and grow while the server stays unreachable; after a session was
        // established again they start over (else an agent that lived through a few outages waits 30 s forever).
        let records = reconnects(inAgentLog: agent.text())
        #expect(records.count >= 4, "\(records)")
        let afterSession = records.filter(\.afterSuccessfulSession)
        #expect(
            afterSession.allSatisfy { $0.retryIn == "0.5 seconds" },
            "the first reconnect delay after an established session should be the shortest (0.5 s); the agent chose: \(records)"
        )

        // A crashed server that restarts with no agent connected must not claim the machine is connected.
        site.stopServer(signal: SIGKILL)
        agent.stop()
        try site.startServer()
        let record = try #require(try site.machine(machine))
        #expect(
            record["connected"] as? Bool == false && record["state"] as? String != "CONTINUOUS",
            "after a server crash and restart with no agent running, the catalog says: state \(record["state"] ?? "-"), connected \(record["connected"] ?? "-")"
        )
    }

    // MARK: - cut connections

    @Test("a cut connection and a half-open one: DISCONNECTED while cut, CONTINUOUS after, the changes arrive")
    func cutConnection() throws {
        let site = try ReplicationSite()
        // A dead (half-open) connection is noticed by the server's idle timeout: 60 s by default, 3 s here.
        try site.configure("idleTimeoutSeconds", 3)
        try site.startServer()
        defer { site.stopServer() }
        let proxy = try TCPProxy(target: site.address, log: site.dir.child("proxy.log"))
        defer { proxy.close() }
        let machine = "cut-link"
        let state = try site.enroll(machine, via: proxy.address)
        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: Self.imageSize, seed: 31))
        let expected = try ExpectedPoints(directory: site.dir.child("expected"))
        var writer = BlockWriter(image: image, size: Self.imageSize, seed: 32)
        let agent = try AgentRunner(state: state, volumes: ["disk=" + image], log: site.dir.child("agent.log"))
        defer { agent.kill9() }

        let first = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        try expected.record(point: try #require(first, "no initial sync: \(agent.text())"), image: image)
        let firstIncremental = try site.points(machine: machine).count
        #expect(site.waitForState(machine, "CONTINUOUS", connected: true).ok)

        // 1. Closed: every connection closed, new ones refused. The server notices the closed TCP connection.
        try writer.write(blocks: 20)
        sleep(seconds: 0.3)
        try proxy.cut()
        let down = site.waitForState(machine, "DISCONNECTED", connected: false)
        #expect(down.ok, "cut: the machine did not become DISCONNECTED: \(String(describing: down.last))")
        try writer.write(blocks: 40)  // changes while cut
        sleep(seconds: 1)
        #expect(agent.isRunning)
        #expect(site.machine(machine, is: "DISCONNECTED"), "still cut, the state changed")
        try proxy.restore()
        let up = site.waitForState(machine, "CONTINUOUS", connected: true, timeout: 60)
        #expect(up.ok, "after the cut: \(String(describing: up.last))\n\(agent.text())")
        var caught = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        #expect(caught != nil, "the changes made while cut never arrived")
        if let caught { try expected.record(point: caught, image: image) }
        try Self.expectIntact(site, expected, machine: machine, "after the cut")

        // 2. Half-open: connections stay open but no byte passes. Only the server's idle timeout can tell.
        try writer.write(blocks: 20)
        sleep(seconds: 0.3)
        let held = try proxy.command("hold")
        #expect(held >= 2, "no live connection to hold (\(held))")
        try writer.write(blocks: 40)
        let dead = site.waitForState(machine, "DISCONNECTED", connected: false, timeout: 30)
        #expect(dead.ok, "half-open: the server did not close the silent session: \(String(describing: dead.last))\n\(site.log())")
        try proxy.resume()
        let again = site.waitForState(machine, "CONTINUOUS", connected: true, timeout: 60)
        #expect(again.ok, "after the half-open link: \(String(describing: again.last))\n\(agent.text())")
        caught = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        #expect(caught != nil, "the changes made while half-open never arrived")
        if let caught { try expected.record(point: caught, image: image) }

        try Self.expectIntact(site, expected, machine: machine, "after the half-open link")
        try Self.expectAcknowledgedListed(site, machine: machine, "after the cuts")
        Self.expectSequencesAgree(site, "after the cuts")
        try Self.expectNoFullResync(site, machine: machine, after: firstIncremental, "cuts")
        #expect(agent.text().contains("replication interrupted; reconnecting"))
    }

    // MARK: - a full disk at the server

    @Test("the server's store runs out of space: STALLED with a reason, nothing acknowledged lost, resumes when freed")
    func stalledOnFullStore() throws {
        let site = try ReplicationSite()
        let tmpfs = try TmpfsStore(data: site.data, megabytes: 48)
        defer {
            site.stopServer()
            tmpfs.unmount()
        }
        try site.startServer()
        let machine = "full-disk"
        let state = try site.enroll(machine)
        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: Self.imageSize, seed: 41))
        let expected = try ExpectedPoints(directory: site.dir.child("expected"))
        var writer = BlockWriter(image: image, size: Self.imageSize, seed: 42)
        let agent = try AgentRunner(state: state, volumes: ["disk=" + image], log: site.dir.child("agent.log"))
        defer { agent.kill9() }

        let first = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        try expected.record(point: try #require(first, "no initial sync: \(agent.text())\n\(site.log())"), image: image)
        try writer.write(blocks: 30)
        let second = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        try expected.record(point: try #require(second), image: image)
        let firstIncremental = 1
        #expect(site.waitForState(machine, "CONTINUOUS", connected: true).ok)

        // Fill the store's filesystem, then change 2 MiB: the commit cannot be stored.
        let filled = tmpfs.fill("filler")
        #expect(filled > 0 && tmpfs.freeBytes() < 1 * MiB, "filled \(filled), free \(tmpfs.freeBytes())")
        let before = try site.points(machine: machine).count
        try writer.write(blocks: 512)
        let stalled = site.waitForState(machine, "STALLED", connected: true)
        #expect(stalled.ok, "no STALLED with a full store: \(String(describing: stalled.last))\n\(site.log())")
        let reason = stalled.last?["stateReason"] as? String ?? ""
        #expect(!reason.isEmpty, "STALLED without a reason")
        print("STALLED reason: \(reason)")

        // While the store stays full the state stays STALLED (the agent keeps retrying), nothing new is committed.
        var seen: [String: Int] = [:]
        for _ in 0..<25 {
            let s = ((try? site.machine(machine)) ?? nil)?["state"] as? String ?? "-"
            seen[s, default: 0] += 1
            sleep(seconds: 0.1)
        }
        #expect(try site.points(machine: machine).count == before, "a commit landed on a full store")
        #expect(seen.keys.sorted() == ["STALLED"], "states reported while the store stayed full: \(seen)")
        #expect(agent.text().contains("commit rejected"), "\(agent.text())")
        #expect(agent.isRunning)
        try Self.expectIntact(site, expected, machine: machine, "while the store is full")

        // Space again: the retried commit lands, the state returns to CONTINUOUS and the data arrives.
        try FileTools.removeFile(tmpfs.mountPoint + "/filler")
        let back = site.waitForState(machine, "CONTINUOUS", connected: true, timeout: 60)
        #expect(back.ok, "after freeing space: \(String(describing: back.last))\n\(agent.text())")
        let caught = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        #expect(caught != nil, "the changes made while stalled never arrived")
        if let caught { try expected.record(point: caught, image: image) }
        try Self.expectIntact(site, expected, machine: machine, "after freeing space")
        try Self.expectAcknowledgedListed(site, machine: machine, "after the stall")
        Self.expectSequencesAgree(site, "after the stall")
        try Self.expectNoFullResync(site, machine: machine, after: firstIncremental, "stall")
    }

    // MARK: - a restart that overtakes the server's commit

    @Test("an agent restarted while the server still makes its last commit durable: WELCOME's last sequence must be true")
    func restartOvertakesServerCommit() throws {
        let site = try ReplicationSite()
        try site.startServer()
        var stopped: Int32?  // a server stopped with SIGSTOP must be continued whatever happens
        defer {
            if let stopped { kill(stopped, SIGCONT) }
            site.stopServer()
        }
        let machine = "overtaken"
        let state = try site.enroll(machine)
        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: Self.imageSize, seed: 51))
        let expected = try ExpectedPoints(directory: site.dir.child("expected"))
        var rng = SeededRandom(seed: 52)
        let pendingFile = state + "/pending.json"
        let first = try AgentRunner(state: state, volumes: ["disk=" + image], log: site.dir.child("agent-a.log"))
        defer { first.kill9() }
        try expected.record(point: try #require(try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")), image: image)
        let firstIncremental = try site.points(machine: machine).count

        // 1. The server is held (SIGSTOP) while the agent sends a 2 MiB commit and its END_COMMIT; the agent
        //    dies (kill -9) with the commit unacknowledged and restarts at once; then the server goes on. It
        //    finishes the old session's commit while the new session has already told the agent (WELCOME) that
        //    the last committed sequence is the one before.
        let server = try #require(site.server?.processIdentifier)
        kill(server, SIGSTOP)
        stopped = server
        try FileTools.write(image, rng.bytes(2 * MiB), at: 0)
        #expect(poll(timeout: 20, every: 0.002) { FileTools.exists(pendingFile) }, "no commit was sent: \(first.text())")
        sleep(seconds: 0.2)  // the frames leave the agent for the kernel's socket buffers
        first.kill9()
        let second = try AgentRunner(state: state, volumes: ["disk=" + image], log: site.dir.child("agent-b.log"))
        defer { second.kill9() }
        sleep(seconds: 0.5)  // the new agent connects (the kernel accepts it) and starts its TLS handshake
        kill(server, SIGCONT)
        stopped = nil
        #expect(site.waitForState(machine, "CONTINUOUS", connected: true, timeout: 60).ok)
        let caught = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        try expected.record(point: try #require(caught, "the 2 MiB change never arrived"), image: image)
        Self.expectSequencesAgree(site, "a restart during the server's commit")

        // 2. The same agent process then loses a commit for real: the server is held, the agent sends a commit,
        //    the server dies (kill -9) before reading it and restarts. The agent must resend those changes (the
        //    commit did not land), not take them for acknowledged because of an off-by-one sequence.
        // Only what the agent logs from here on is about the lost commit (step 1's commit did land).
        let logBefore = second.text().count
        let server2 = try #require(site.server?.processIdentifier)
        kill(server2, SIGSTOP)
        stopped = server2
        try FileTools.write(image, rng.bytes(64 * KiB), at: Int64(8 * MiB))
        #expect(poll(timeout: 20, every: 0.002) { FileTools.exists(pendingFile) }, "no commit was sent: \(second.text())")
        sleep(seconds: 0.2)
        site.stopServer(signal: SIGKILL)
        stopped = nil
        try site.startServer()
        #expect(site.waitForState(machine, "CONTINUOUS", connected: true, timeout: 60).ok)
        let after = try site.waitForLatest(equalTo: image, machine: machine, volume: "disk")
        try expected.record(point: try #require(after, "the 64 KiB change never arrived: \(second.text())"), image: image)
        let log = String(second.text().dropFirst(logBefore))
        #expect(log.contains("had not landed"), "the agent did not notice the lost commit:\n\(log)")
        #expect(!log.contains("an unacknowledged commit had landed"), "the agent took a commit that never landed for acknowledged:\n\(log)")
        #expect(!log.contains("replication.unknown-base"), "the agent had to rescan:\n\(log)")
        try Self.expectNoFullResync(site, machine: machine, after: firstIncremental, "restart during the server's commit")
        try Self.expectIntact(site, expected, machine: machine, "restart during the server's commit")
        try Self.expectAcknowledgedListed(site, machine: machine, "restart during the server's commit")
    }

    // MARK: - idle but healthy

    @Test("a healthy agent between two cycles is not taken for a dead peer (the idle timeout needs keepalives)")
    func idleAgentStaysConnected() throws {
        let site = try ReplicationSite()
        // Same ratio as an agent with --interval 120 against the default 60 s idle timeout.
        try site.configure("idleTimeoutSeconds", 1)
        try site.startServer()
        defer { site.stopServer() }
        let machine = "quiet"
        let state = try site.enroll(machine)
        let image = site.dir.child("disk.img")
        try FileTools.write(image, TestImage.mixed(size: 8 * MiB, seed: 61))
        let agent = try AgentRunner(state: state, volumes: ["disk=" + image], log: site.dir.child("agent.log"), interval: 3)
        defer { agent.kill9() }
        #expect(try site.waitForLatest(equalTo: image, machine: machine, volume: "disk") != nil)
        #expect(site.waitForState(machine, "CONTINUOUS", connected: true).ok)

        var seen: [String: Int] = [:]
        for _ in 0..<30 {
            let s = ((try? site.machine(machine)) ?? nil)?["state"] as? String ?? "-"
            seen[s, default: 0] += 1
            sleep(seconds: 0.2)
        }
        let sessions = site.log().split(separator: "\n").filter { $0.contains("session established") }.count
        #expect(seen.keys.sorted() == ["CONTINUOUS"], "states of a healthy, idle agent: \(seen)")
        #expect(sessions == 1, "the agent had to connect \(sessions) times:\n\(agent.text())")
    }
}

extension ReplicationSite {
    /// Whether `machines list` shows the machine in `state` now.
    func machine(_ name: String, is state: String) -> Bool {
        ((try? machine(name)) ?? nil)?["state"] as? String == state
    }
}
