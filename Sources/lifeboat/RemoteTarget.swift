#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import ArgumentParser
import Catalog
import ControlPlaneClient
import Foundation
import LifeboatAPI
import LifeboatCore

/// Where a command works: on the server's data directory (`--data DIR`, on the server host) or through the
/// REST API of a running server (`--server URL`, or the server of the last `lifeboat login`).
struct TargetOptions: ParsableArguments {
    @Option(name: .long, help: "The server's data directory, on the server host (or set LIFEBOAT_DATA).")
    var data: String?

    @Option(name: .long, help: "The API of a running server (default: the one you logged in to with `lifeboat login`).")
    var server: String?

    enum Target {
        case local(DataOptions)
        case remote(RemoteServer)
    }

    /// `--server`, else `--data`/`LIFEBOAT_DATA`, else the saved login.
    func resolve() throws -> Target {
        if let server {
            let saved = try Credentials.load()
            let token = ProcessEnvironment.value("LIFEBOAT_TOKEN") ?? (saved?.server == server ? saved?.token : nil)
            guard let token else {
                throw LifeboatError("cli.not-logged-in", "log in to \(server) first: lifeboat login --server \(server) --user NAME")
            }
            return .remote(RemoteServer(url: server, token: token, caPEM: saved?.server == server ? saved?.caPEM : nil))
        }
        if data != nil || ProcessEnvironment.value("LIFEBOAT_DATA") != nil {
            var options = DataOptions()
            options.data = data
            return .local(options)
        }
        if let saved = try Credentials.load() {
            return .remote(RemoteServer(url: saved.server, token: ProcessEnvironment.value("LIFEBOAT_TOKEN") ?? saved.token, caPEM: saved.caPEM))
        }
        throw LifeboatError(
            "cli.no-target",
            "no server given: log in with `lifeboat login --server URL --user NAME`, or on the server host use --data DIR"
        )
    }

    /// For commands that exist only through the API.
    func remote() throws -> APIClient {
        switch try resolve() {
        case .remote(let server): return try server.client()
        case .local:
            throw LifeboatError(
                "cli.needs-server",
                "this command works through the API: run `lifeboat server run` and log in (`lifeboat login --server URL --user NAME`), or give --server URL"
            )
        }
    }
}

/// A server's API and how to authenticate to it; `client()` connects (close it with `shutdown()`).
struct RemoteServer {
    var url: String
    var token: String
    var caPEM: String?

    func client() throws -> APIClient { try APIClient(baseURL: url, token: token, caPEM: caPEM) }
}

/// Runs `body` with a new client of `server` and closes it afterwards.
func withClient<T>(_ server: RemoteServer, _ body: (APIClient) async throws -> T) async throws -> T {
    try await withClient(try server.client(), body)
}

/// Runs `body` with the client and closes it afterwards.
func withClient<T>(_ client: APIClient, _ body: (APIClient) async throws -> T) async throws -> T {
    do {
        let value = try await body(client)
        await client.shutdown()
        return value
    } catch {
        await client.shutdown()
        throw error
    }
}

/// Every page of a list.
func fetchAll<T: Codable & Sendable>(_ client: APIClient, _ path: String, query: [String: String?] = [:], as: T.Type) async throws -> [T] {
    var items: [T] = []
    var offset = 0
    while true {
        var q = query
        q["limit"] = "500"
        q["offset"] = "\(offset)"
        let page: Page<T> = try await client.get(path, query: q)
        items += page.items
        offset += page.items.count
        if page.items.isEmpty || offset >= page.total { return items }
    }
}

/// Prints an API answer as JSON for scripts.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Percent-encodes one path segment.
func segment(_ text: String) -> String {
    var allowed = CharacterSet.urlPathAllowed
    allowed.remove(charactersIn: "/?#")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
}

struct Empty: Codable {}

struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Log in to a server's API; later commands use it without --data.",
        discussion: "Stores an API token (not the password) in ~/.config/lifeboat/credentials.json (0600)."
    )

    @Option(name: .long, help: "The API's URL, e.g. https://recovery.example.com:8443.")
    var server: String

    @Option(name: .long, help: "Your user name.")
    var user: String

    @Flag(name: .long, help: "Read the password from the first line of standard input (for scripts).")
    var passwordStdin = false

    @Option(name: .long, help: "The server's CA certificate (PEM; on the server: DATA/ca/ca.pem). Default: the system's trust store.")
    var ca: String?

    @Option(name: .long, help: "Days until the stored token expires (1-366).")
    var days = 30

    func run() async throws {
        try await runAsync {
            let password = try readPassword(fromStdin: passwordStdin, prompt: "Password for \(user): ")
            let caPEM = try ca.map { String(decoding: try readSmallFile($0), as: UTF8.self) }
            let client = try APIClient(baseURL: server, token: nil, caPEM: caPEM)
            let host = ProcessEnvironment.hostName()
            let issued: IssuedTokenDTO = try await withClient(client) {
                try await $0.send(
                    .POST, "login",
                    body: LoginRequest(user: user, password: password, token: NewTokenRequest(name: "cli on \(host)", days: days))
                )
            }
            try Credentials(
                server: client.baseURL, user: user, token: issued.secret, tokenId: issued.token.id,
                expiresAt: issued.token.expiresAt, caPEM: caPEM
            ).save()
            print("logged in to \(client.baseURL) as \(user) (token \(issued.token.id), expires \(issued.token.expiresAt))")
        }
    }
}

struct LogoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logout", abstract: "Revoke the stored API token and forget it.")

    func run() async throws {
        try await runAsync {
            guard let saved = try Credentials.load() else {
                print("not logged in")
                return
            }
            let client = try APIClient(baseURL: saved.server, token: saved.token, caPEM: saved.caPEM)
            do {
                let _: [String: Bool] = try await withClient(client) { try await $0.call(.POST, "logout") }
            } catch let error as LifeboatError where error.code.rawValue.hasPrefix("auth.") {
                // Already expired or revoked: forgetting it is all that is left.
            }
            try Credentials.remove()
            print("logged out of \(saved.server)")
        }
    }
}

/// Reads a password: one line of stdin, or a prompt on the terminal without echo.
func readPassword(fromStdin: Bool, prompt: String) throws -> String {
    if fromStdin {
        guard let line = readLine(strippingNewline: true), !line.isEmpty else {
            throw LifeboatError("cli.no-password", "--password-stdin: standard input had no password")
        }
        return line
    }
    guard isatty(0) == 1, let raw = getpass(prompt) else {
        throw LifeboatError("cli.no-password", "no terminal to ask for the password: use --password-stdin")
    }
    return String(cString: raw)
}
