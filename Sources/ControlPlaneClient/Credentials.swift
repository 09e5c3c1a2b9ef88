#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Foundation
import LifeboatCore

/// What `lifeboat login` keeps for later commands: the server, the user, an API token (a secret: the file is
/// 0600 in a 0700 directory) and the server's CA certificate to trust.
public struct Credentials: Codable, Sendable, Equatable {
    public var server: String
    public var user: String
    public var token: String
    public var tokenId: String
    public var expiresAt: String
    public var caPEM: String?

    public init(server: String, user: String, token: String, tokenId: String, expiresAt: String, caPEM: String?) {
        self.server = server
        self.user = user
        self.token = token
        self.tokenId = tokenId
        self.expiresAt = expiresAt
        self.caPEM = caPEM
    }

    /// `$LIFEBOAT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/lifeboat`, else `~/.config/lifeboat`.
    public static var directory: String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["LIFEBOAT_CONFIG_DIR"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_CONFIG_HOME"], !xdg.isEmpty { return xdg + "/lifeboat" }
        return (env["HOME"] ?? NSHomeDirectory()) + "/.config/lifeboat"
    }

    public static var path: String { directory + "/credentials.json" }

    /// The saved credentials, or nil when nobody logged in.
    /// - Throws: `cli.credentials` for a damaged file.
    public static func load() throws -> Credentials? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(Credentials.self, from: data)
        } catch {
            throw LifeboatError("cli.credentials", "\(path) is damaged: log in again with `lifeboat login`", cause: error)
        }
    }

    /// Writes the file with mode 0600 (its directory 0700), replacing any earlier login.
    public func save() throws {
        let manager = FileManager.default
        try manager.createDirectory(atPath: Self.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        let temporary = Self.path + ".tmp"
        _ = manager.createFile(atPath: temporary, contents: nil, attributes: [.posixPermissions: 0o600])
        guard let handle = FileHandle(forWritingAtPath: temporary) else {
            throw LifeboatError("cli.credentials", "cannot write \(temporary): check the permissions of \(Self.directory)")
        }
        try handle.write(contentsOf: data)
        try handle.synchronize()
        try handle.close()
        guard rename(temporary, Self.path) == 0 else {
            throw LifeboatError("cli.credentials", "cannot write \(Self.path): check the permissions of \(Self.directory)")
        }
    }

    /// Forgets the login.
    public static func remove() throws {
        if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
    }
}
