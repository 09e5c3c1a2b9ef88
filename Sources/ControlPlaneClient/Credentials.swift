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
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o077 != 0 {
            throw LifeboatError("cli.credentials", "\(path) can be read by others (mode \(String(info.st_mode & 0o777, radix: 8))): run `chmod 600 \(path)` or log in again")
        }
        do {
            return try JSONDecoder().decode(Credentials.self, from: data)
        } catch {
            throw LifeboatError("cli.credentials", "\(path) is damaged: log in again with `lifeboat login`", cause: error)
        }
    }

    /// Writes the file with mode 0600 (its directory 0700), replacing any earlier login: a new file created
    /// exclusively (never through a symlink), synced, then renamed over the old one.
    public func save() throws {
        let manager = FileManager.default
        try manager.createDirectory(atPath: Self.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        _ = chmod(Self.directory, 0o700)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let bytes = Array(try encoder.encode(self))
        let temporary = Self.directory + "/.credentials-\(UInt64.random(in: 0 ... .max)).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw LifeboatError("cli.credentials", "cannot write in \(Self.directory): check its owner and permissions")
        }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else {
                close(fd)
                unlink(temporary)
                throw LifeboatError("cli.credentials", "cannot write \(temporary): is the disk full?")
            }
            written += n
        }
        _ = fchmod(fd, 0o600)
        _ = fsync(fd)
        close(fd)
        guard rename(temporary, Self.path) == 0 else {
            unlink(temporary)
            throw LifeboatError("cli.credentials", "cannot write \(Self.path): check the permissions of \(Self.directory)")
        }
    }

    /// Forgets the login.
    public static func remove() throws {
        if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
    }
}
