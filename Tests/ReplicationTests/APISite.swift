import ControlPlaneClient
import Foundation
import LifeboatAPI
import LifeboatCore
import LifeboatTesting
import Testing

/// One answer of the REST API exactly as it arrived: status, headers and body bytes.
struct APIAnswer: CustomStringConvertible {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    /// The body as a JSON object, when it is one.
    var object: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }

    /// The body as a JSON array, when it is one.
    var array: [Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [Any] }

    /// `error.code` of an error answer; "" when the body has none.
    var code: String { ((object?["error"] as? [String: Any])?["code"] as? String) ?? "" }

    /// `error.message` of an error answer; "" when the body has none.
    var message: String { ((object?["error"] as? [String: Any])?["message"] as? String) ?? "" }

    /// Every value of a header (names compared without case).
    func values(_ name: String) -> [String] {
        headers.filter { $0.0.lowercased() == name.lowercased() }.map(\.1)
    }

    func header(_ name: String) -> String? { values(name).first }

    var description: String {
        let shown = text.count > 700 ? String(text.prefix(700)) + "…" : text
        return "\(status) \(shown)"
    }

    /// What is wrong with this answer as an error answer (`{"error":{"code","message","status"}}`, JSON content
    /// type, the status repeated in the body); nil when it is well formed.
    var errorShapeProblem: String? {
        guard let error = object?["error"] as? [String: Any] else { return "no JSON error object: \(self)" }
        let keys = Set(error.keys)
        guard keys == ["code", "message", "status"] else { return "error keys \(keys.sorted()): \(self)" }
        guard let code = error["code"] as? String, !code.isEmpty else { return "empty code: \(self)" }
        guard let message = error["message"] as? String, !message.trimmingCharacters(in: .whitespaces).isEmpty else {
            return "empty message: \(self)"
        }
        guard error["status"] as? Int == status else { return "body status differs from \(status): \(self)" }
        let type = header("Content-Type") ?? ""
        guard type.lowercased().hasPrefix("application/json") else { return "Content-Type '\(type)': \(self)" }
        return nil
    }
}

/// A running `lifeboat server run` (a `ReplicationSite`) with its REST API, a first admin made on the server
/// host with the CLI, and a client that sends requests exactly as given.
final class APISite: @unchecked Sendable {
    static let adminName = "chief"
    static let adminPassword = "chief has a long password"

    let replication: ReplicationSite
    let client: APIClient
    /// The first admin's API token and its id.
    private(set) var adminToken = ""
    private(set) var adminTokenId = ""

    var data: String { replication.data }
    var catalogPath: String { data + "/catalog.sqlite" }
    var caPath: String { data + "/ca/ca.pem" }
    var url: String { replication.apiURL }

    private init(replication: ReplicationSite, client: APIClient) {
        self.replication = replication
        self.client = client
    }

    /// A new site: server initialised, the first admin created with `lifeboat users create --password-stdin`,
    /// the server started, the admin logged in through the API.
    static func start() async throws -> APISite {
        let replication = try ReplicationSite()
        let made = try APIProcess.run(
            ReplicationSite.binary,
            ["users", "create", adminName, "--roles", "admin", "--password-stdin", "--data", replication.data],
            input: adminPassword + "\n"
        )
        try #require(made.status == 0, "users create: \(made.stdout) \(made.stderr)")
        try replication.startServer()
        let pem = try String(contentsOfFile: replication.data + "/ca/ca.pem", encoding: .utf8)
        let site = APISite(replication: replication, client: try APIClient(baseURL: replication.apiURL, token: nil, caPEM: pem))
        do {
            let issued = try await site.login(adminName, adminPassword)
            site.adminToken = issued.secret
            site.adminTokenId = issued.id
        } catch {
            await site.close()
            throw error
        }
        return site
    }

    /// Runs `body` with a new site and always closes the client and stops the server afterwards.
    static func with<T>(_ body: (APISite) async throws -> T) async throws -> T {
        let site = try await start()
        do {
            let value = try await body(site)
            await site.close()
            return value
        } catch {
            await site.close()
            throw error
        }
    }

    func close() async {
        await client.shutdown()
        replication.stopServer()
    }

    // MARK: requests

    /// Sends a request as given. `json` is sent as the body with `Content-Type: application/json` unless
    /// `contentType` says otherwise (nil: no Content-Type at all).
    func send(
        _ method: HTTPVerb, _ path: String, json: String? = nil, token: String? = nil,
        contentType: String? = "application/json", headers: [(String, String)] = []
    ) async throws -> APIAnswer {
        var fields = headers
        if let token { fields.append(("Authorization", "Bearer \(token)")) }
        if json != nil, let contentType { fields.append(("Content-Type", contentType)) }
        let answer = try await client.raw(method, path, body: json.map { Array($0.utf8) }, headers: fields, authorized: false)
        return APIAnswer(status: answer.status, headers: answer.headers, body: answer.body)
    }

    /// Sends raw bytes (large or malformed bodies).
    func sendBytes(_ method: HTTPVerb, _ path: String, _ bytes: [UInt8], token: String?, contentType: String) async throws -> APIAnswer {
        var fields = [("Content-Type", contentType)]
        if let token { fields.append(("Authorization", "Bearer \(token)")) }
        let answer = try await client.raw(method, path, body: bytes, headers: fields, authorized: false)
        return APIAnswer(status: answer.status, headers: answer.headers, body: answer.body)
    }

    /// `POST /login` for an API token: its id and secret.
    func login(_ user: String, _ password: String, tokenName: String = "test") async throws -> (id: String, secret: String) {
        let answer = try await send(
            .POST, "/api/v1/login", json: Self.json(["user": user, "password": password, "token": ["name": tokenName, "days": 1]])
        )
        try #require(answer.status == 201, "login \(user): \(answer)")
        let token = try #require(answer.object?["token"] as? [String: Any], "login \(user): \(answer)")
        return (try #require(token["id"] as? String), try #require(answer.object?["secret"] as? String))
    }

    /// A user made through the API by the first admin.
    func createUser(_ name: String, roles: [Role], password: String) async throws {
        let answer = try await send(
            .POST, "/api/v1/users", json: Self.json(["name": name, "password": password, "roles": roles.map(\.rawValue)]),
            token: adminToken
        )
        try #require(answer.status == 201, "create user \(name): \(answer)")
    }

    /// A GET that must succeed, as the first admin unless `token` is given.
    func get(_ path: String, token: String? = nil) async throws -> APIAnswer {
        let answer = try await send(.GET, path, token: token ?? adminToken)
        try #require(answer.status == 200, "GET \(path): \(answer)")
        return answer
    }

    /// Every audit entry after `afterSeq`, oldest first (read page by page through the API).
    func auditEntries(afterSeq: Int64) async throws -> [[String: Any]] {
        var entries: [[String: Any]] = []
        var offset = 0
        while true {
            let page = try await get("/api/v1/audit?limit=500&offset=\(offset)")
            let items = page.object?["items"] as? [[String: Any]] ?? []
            entries += items
            offset += items.count
            let total = page.object?["total"] as? Int ?? 0
            if items.isEmpty || offset >= total { break }
        }
        return entries.filter { Self.seq($0) > afterSeq }.sorted { Self.seq($0) < Self.seq($1) }
    }

    /// The newest audit entry's seq (from `GET /audit/verify`).
    func auditHead() async throws -> Int64 {
        let verified = try await get("/api/v1/audit/verify")
        return Int64(try #require(verified.object?["headSeq"] as? Int, "\(verified)"))
    }

    static func seq(_ entry: [String: Any]) -> Int64 { Int64(entry["seq"] as? Int ?? 0) }

    // MARK: the catalog and the CLI

    /// Runs SQL on the catalog with the sqlite3 command-line tool (the server keeps running).
    @discardableResult
    func sqlite(_ sql: String) throws -> String {
        let r = try APIProcess.run("/usr/bin/sqlite3", ["-batch", "-cmd", ".timeout 10000", catalogPath, sql], input: nil)
        try #require(r.status == 0, "sqlite3 \(sql): \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `lifeboat ARGS` on this site.
    func lifeboat(_ arguments: [String], input: String? = nil, timeout: TimeInterval = 60) throws -> ProcessResult {
        try APIProcess.run(ReplicationSite.binary, arguments, input: input, timeout: timeout)
    }

    // MARK: JSON

    /// A JSON text of an object (keys sorted).
    static func json(_ object: [String: Any]) -> String { json(value: object) }

    /// A JSON text of a dictionary or array (keys sorted).
    static func json(value: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// A JSON text with the keys sorted and the named keys removed everywhere (to compare states).
    static func normalized(_ bytes: [UInt8], dropping keys: Set<String> = []) -> String {
        func strip(_ value: Any) -> Any {
            if let object = value as? [String: Any] {
                return object.filter { !keys.contains($0.key) }.mapValues(strip)
            }
            if let array = value as? [Any] { return array.map(strip) }
            return value
        }
        guard let value = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) else {
            return String(decoding: bytes, as: UTF8.self)
        }
        let data = (try? JSONSerialization.data(withJSONObject: strip(value), options: [.sortedKeys, .fragmentsAllowed])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// Child processes with text on standard input and a time limit (a server that should refuse to start but does
/// not must not hang the test run).
enum APIProcess {
    private final class Output: @unchecked Sendable {
        var out = Data()
        var err = Data()
    }

    static func run(
        _ executable: String, _ arguments: [String], input: String?, timeout: TimeInterval = 60
    ) throws -> ProcessResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["LIFEBOAT_DATA"] = nil
        process.environment = environment
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try? stdin.fileHandleForWriting.close()
        let output = Output()
        let readers = DispatchGroup()
        for (pipe, isError) in [(stdout, false), (stderr, true)] {
            readers.enter()
            Thread {
                let bytes = pipe.fileHandleForReading.readDataToEndOfFile()
                if isError { output.err = bytes } else { output.out = bytes }
                readers.leave()
            }.start()
        }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        let timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        readers.wait()
        let err = String(decoding: output.err, as: UTF8.self)
        return ProcessResult(
            status: timedOut ? -9 : process.terminationStatus,
            stdout: String(decoding: output.out, as: UTF8.self),
            stderr: timedOut ? "timed out after \(timeout) s; " + err : err
        )
    }
}
