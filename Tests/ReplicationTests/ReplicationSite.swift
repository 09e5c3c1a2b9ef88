import Foundation
import LifeboatCore
import LifeboatTesting
import Testing

/// A replication server in a temporary data directory, run as the real `lifeboat server run` process on a free
/// loopback port, with helpers to enroll and run real agents against it.
final class ReplicationSite: @unchecked Sendable {
    let dir: TemporaryDirectory
    let data: String
    private(set) var server: Process?
    private(set) var address: String = ""
    /// The NBD server's `HOST:PORT` (recovery instances' disks); the first start picks a free port, later starts reuse it.
    private(set) var nbdAddress: String = ""
    /// Where the NBD server binds on the first start (another address than loopback turns TLS on).
    var nbdBind = "127.0.0.1:0"
    /// The REST API's URL (`https://127.0.0.1:PORT`); the first start picks a free port, later starts reuse it.
    private(set) var apiURL: String = ""
    let serverLog: String
    private var serverRuns = 0

    static var binary: String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent().appendingPathComponent("lifeboat").path
    }

    init() throws {
        dir = try TemporaryDirectory(prefix: "lifeboat-repl")
        data = dir.child("server")
        serverLog = dir.child("server.log")
        let made = try Self.lifeboat(["server", "init", "--data", data, "--name", "localhost", "--name", "127.0.0.1", "--listen", "127.0.0.1:0"])
        try #require(made.status == 0, "server init failed: \(made.stderr)")
    }

    deinit {
        if let server, server.isRunning {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
    }

    @discardableResult
    static func lifeboat(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessResult {
        try Processes.run(binary, arguments, environment: environment)
    }

    /// Starts `lifeboat server run`; the first start picks a free port, later starts reuse it.
    func startServer() throws {
        precondition(server?.isRunning != true)
        let addressFile = data + "/replication.address"
        try? FileManager.default.removeItem(atPath: addressFile)
        let listen = address.isEmpty ? "127.0.0.1:0" : address
        let nbdListen = nbdAddress.isEmpty ? nbdBind : nbdAddress
        try? FileManager.default.removeItem(atPath: data + "/nbd.address")
        try? FileManager.default.removeItem(atPath: data + "/api.address")
        let apiListen = apiURL.isEmpty ? "127.0.0.1:0" : String(apiURL.dropFirst("https://".count))
        server = try Self.background(
            ["server", "run", "--data", data, "--listen", listen, "--nbd-listen", nbdListen, "--api-listen", apiListen],
            log: serverLog
        )
        serverRuns += 1
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: addressFile, encoding: .utf8), !text.isEmpty,
                let nbd = try? String(contentsOfFile: data + "/nbd.address", encoding: .utf8), !nbd.isEmpty,
                let api = try? String(contentsOfFile: data + "/api.address", encoding: .utf8), !api.isEmpty
            {
                apiURL = api.trimmingCharacters(in: .whitespacesAndNewlines)
                address = text.trimmingCharacters(in: .whitespacesAndNewlines)
                nbdAddress = nbd.trimmingCharacters(in: .whitespacesAndNewlines)
                return
            }
            guard server?.isRunning == true else { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        Issue.record("the server did not start: \(log())")
        throw LifeboatError("test.server", "server did not start")
    }

    /// SIGTERM (graceful) or SIGKILL.
    func stopServer(signal: Int32 = SIGTERM) {
        guard let server, server.isRunning else { return }
        kill(server.processIdentifier, signal)
        server.waitUntilExit()
    }

    var port: String { String(address.split(separator: ":").last ?? "") }

    func log() -> String { (try? String(contentsOfFile: serverLog, encoding: .utf8)) ?? "" }

    /// Starts a child process with stdout and stderr appended to `log`.
    static func background(_ arguments: [String], log: String) throws -> Process {
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = arguments
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        return p
    }

    func token(expires: String = "1h") throws -> String {
        let r = try Self.lifeboat(["tokens", "create", "--data", data, "--expires", expires])
        try #require(r.status == 0, "tokens create failed: \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Enrolls an agent state directory as `machine`; returns the state directory.
    @discardableResult
    func enroll(_ machine: String, state: String? = nil) throws -> String {
        let stateDir = state ?? dir.child("agent-\(machine)")
        let r = try Self.lifeboat(["agent", "enroll", "--server", address, "--token", try token(), "--state", stateDir, "--name", machine])
        try #require(r.status == 0, "enroll failed: \(r.stderr)")
        return stateDir
    }

    /// `lifeboat agent run --once`.
    func agentOnce(state: String, volumes: [String], extra: [String] = []) throws -> ProcessResult {
        try Self.lifeboat(["agent", "run", "--once", "--state", state] + volumes.flatMap { ["--volume", $0] } + extra)
    }

    /// `lifeboat machines --json`, parsed.
    func machines() throws -> [[String: Any]] {
        let r = try Self.lifeboat(["machines", "list", "--data", data, "--json"])
        try #require(r.status == 0, "machines failed: \(r.stderr)")
        let parsed = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
        return parsed as? [[String: Any]] ?? []
    }

    func machine(_ name: String) throws -> [String: Any]? {
        try machines().first { $0["name"] as? String == name }
    }

    /// Store arguments for `lifeboat store …` on the server's store.
    var storeArguments: [String] { ["--store", data + "/store", "--key-file", data + "/store.key"] }

    /// Exports a volume at a point to a raw file and returns its bytes.
    func export(machine: String, volume: String, point: String = "latest") throws -> [UInt8] {
        let out = dir.child("export-\(UUID().uuidString.prefix(6)).img")
        let r = try Self.lifeboat(["store", "export"] + storeArguments + ["--machine", machine, "--volume", volume, "--point", point, "--output", out])
        try #require(r.status == 0, "export failed: \(r.stderr)")
        defer { try? FileManager.default.removeItem(atPath: out) }
        return try FileTools.read(out)
    }

    /// The points of a machine as `store points --json` lists them.
    func points(machine: String) throws -> [[String: Any]] {
        let r = try Self.lifeboat(["store", "points"] + storeArguments + ["--machine", machine, "--json"])
        try #require(r.status == 0, "points failed: \(r.stderr)")
        return (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]]) ?? []
    }
}
