import AsyncHTTPClient
import Foundation
import LifeboatAPI
import LifeboatCore
import NIOCore
import NIOHTTP1
import NIOSSL

/// The methods the API uses.
public enum HTTPVerb: String, Sendable {
    case GET, POST, PATCH, PUT, DELETE

    var nio: HTTPMethod { HTTPMethod(rawValue: rawValue) }
}

/// A client of Lifeboat's REST API: JSON in and out, an API token, the server's CA as the only trust root when
/// given. An error answer becomes a `LifeboatError` with the server's code and message; an unreachable server says so.
public final class APIClient: Sendable {
    public let baseURL: String
    private let token: String?
    private let http: HTTPClient

    /// - Parameters:
    ///   - baseURL: `https://host:8443` (plain `http://` only for a loopback server; anything else is refused).
    ///   - caPEM: the server's CA certificate (PEM); nil = the system's trust store.
    public init(baseURL: String, token: String?, caPEM: String?) throws {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        guard base.hasPrefix("https://") || base.hasPrefix("http://") else {
            throw LifeboatError("cli.bad-server", "--server \(baseURL): give the API's URL, e.g. https://recovery.example.com:8443")
        }
        if base.hasPrefix("http://") {
            // Passwords and tokens never cross a network in clear: plain HTTP only to this host.
            let host = base.dropFirst("http://".count).prefix { $0 != "/" }
            let name = host.hasPrefix("[") ? String(host.prefix { $0 != "]" }.dropFirst()) : String(host.prefix { $0 != ":" })
            guard name == "127.0.0.1" || name == "::1" || name == "localhost" || name.hasPrefix("127.") else {
                throw LifeboatError("cli.plain-http", "--server \(baseURL): plain http is only for a server on this host; use https://")
            }
        }
        self.baseURL = base
        self.token = token
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let caPEM {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8)))
            } catch {
                throw LifeboatError("cli.bad-ca", "the server's CA certificate is not valid PEM", cause: error)
            }
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(120))
        configuration.redirectConfiguration = .disallow
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Closes connections; call once when done.
    public func shutdown() async {
        try? await http.shutdown()
    }

    public func get<T: Decodable>(_ path: String, query: [String: String?] = [:], as type: T.Type = T.self) async throws -> T {
        try decode(T.self, try await send(.GET, path, query: query, body: nil))
    }

    public func send<B: Encodable, T: Decodable>(
        _ method: HTTPVerb, _ path: String, body: B, query: [String: String?] = [:], as type: T.Type = T.self
    ) async throws -> T {
        let data = try JSONEncoder().encode(body)
        return try decode(T.self, try await send(method, path, query: query, body: data))
    }

    /// A request without a body (DELETE, POST …).
    public func call<T: Decodable>(_ method: HTTPVerb, _ path: String, query: [String: String?] = [:], as type: T.Type = T.self) async throws -> T {
        try decode(T.self, try await send(method, path, query: query, body: nil))
    }

    /// The raw text of an answer (e.g. `/metrics`).
    public func text(_ path: String) async throws -> String {
        String(decoding: try await send(.GET, path, query: [:], body: nil), as: UTF8.self)
    }

    /// A request as given, for tests and tools: the status, the headers and the body, whatever they are.
    public func raw(
        _ method: HTTPVerb, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = [], authorized: Bool = true
    ) async throws -> (status: Int, headers: [(String, String)], body: [UInt8]) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method.nio
        if authorized, let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await http.execute(request, timeout: .seconds(120))
        let buffer = try await response.body.collect(upTo: 64 * 1024 * 1024)
        return (Int(response.status.code), response.headers.map { ($0.name, $0.value) }, Array(buffer.readableBytesView))
    }

    private func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw LifeboatError("api.bad-answer", "the server's answer was not what this lifeboat expects: is it the same version?", cause: error)
        }
    }

    private func send(_ method: HTTPVerb, _ path: String, query: [String: String?], body: Data?) async throws -> Data {
        var url = baseURL + (path.hasPrefix("/") ? path : API.prefix + "/" + path)
        let pairs = query.compactMap { key, value in value.map { (key, $0) } }.sorted { $0.0 < $1.0 }
        if !pairs.isEmpty {
            var allowed = CharacterSet.urlQueryAllowed
            allowed.remove(charactersIn: "&=+?#")
            url += "?" + pairs.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.1)" }.joined(separator: "&")
        }
        var request = HTTPClientRequest(url: url)
        request.method = method.nio
        request.headers.add(name: "Accept", value: "application/json")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(120))
        } catch {
            throw LifeboatError(
                "api.unreachable",
                "cannot reach the Lifeboat API at \(baseURL): is `lifeboat server run` running there, and is the address right?",
                cause: error
            )
        }
        let buffer = try await response.body.collect(upTo: 64 * 1024 * 1024)
        let data = Data(buffer.readableBytesView)
        guard (200..<300).contains(response.status.code) else {
            if let error = try? JSONDecoder().decode(APIErrorBody.self, from: data) {
                throw LifeboatError(.init(error.error.code), error.error.message)
            }
            throw LifeboatError("api.error", "the server answered \(response.status.code) \(response.status.reasonPhrase) for \(method) \(path)")
        }
        return data
    }
}
