import ArgumentParser
import Catalog
import ControlPlaneClient
import LifeboatAPI
import LifeboatCore
import ReplicationServer
import ReplicationTransport

struct TokensCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens",
        abstract: "Enrollment tokens for agents, and API tokens for scripts.",
        subcommands: [TokensCreate.self, TokensList.self, TokensAPI.self, TokensRevoke.self],
        defaultSubcommand: TokensList.self
    )
}

struct TokensCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Print a one-time token that enrolls one agent (with the CA fingerprint the agent pins)."
    )

    @OptionGroup var target: TargetOptions

    @Option(name: .long, help: "How long the token is valid (e.g. 30m, 24h, 7d).")
    var expires: String = "24h"

    @Option(name: .long, help: "A note for the token list (e.g. the machine it is for).")
    var note: String?

    func run() async throws {
        try await runAsync {
            let seconds = try parseDuration(expires)
            guard case .local(let data) = try target.resolve() else {
                let client = try target.remote()
                let hours = Int((seconds + 3599) / 3600)
                let created: EnrollmentTokenDTO = try await withClient(client) {
                    try await $0.send(.POST, "enrollment-tokens", body: NewEnrollmentTokenRequest(expiresHours: hours, note: note))
                }
                print(created.token ?? "")
                printError("valid until \(created.expiresAt) (once); enroll with: lifeboat agent enroll --server HOST:PORT --token TOKEN")
                return
            }
            let layout = try data.layout
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            let ca = try CertificateInspection.der(fromPEM: String(decoding: try readSmallFile(layout.caCertificate), as: UTF8.self))
            let token = try catalog.createEnrollmentToken(validFor: seconds, note: note)
            print(EnrollmentTokenText(secret: token.secret, caFingerprint: CertificateInspection.fingerprint(ofDER: ca)).description)
            printError("valid until \(token.expiresAt) (once); enroll with: lifeboat agent enroll --server HOST:PORT --token TOKEN")
        }
    }
}

struct TokensList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List enrollment tokens, or with --api your API tokens (never their secrets)."
    )

    @OptionGroup var target: TargetOptions

    @Flag(name: .long, help: "List API tokens (yours; --all: everyone's) instead of enrollment tokens.")
    var api = false

    @Flag(name: .long, help: "With --api: every user's tokens (needs the analyst, decider or admin role).")
    var all = false

    @Flag(name: .long, help: "Print JSON for scripts.")
    var json = false

    func run() async throws {
        try await runAsync {
            guard case .local(let data) = try target.resolve() else {
                let client = try target.remote()
                try await withClient(client) { client in
                    if api {
                        let tokens: [TokenDTO] = try await client.get("tokens", query: ["all": all ? "true" : nil])
                        if json { return try printJSON(tokens) }
                        printTable(
                            ["ID", "USER", "NAME", "KIND", "EXPIRES", "LAST USED", "STATE"],
                            tokens.map { t in
                                [t.id, t.user, t.name, t.kind, t.expiresAt, t.lastUsedAt ?? "-", t.revokedAt.map { "revoked \($0)" } ?? "active"]
                            }
                        )
                    } else {
                        let tokens: [EnrollmentTokenDTO] = try await client.get("enrollment-tokens")
                        if json { return try printJSON(tokens) }
                        printTable(
                            ["ID", "CREATED", "EXPIRES", "STATE", "NOTE"],
                            tokens.map { t in [t.id, t.createdAt, t.expiresAt, t.usedBy.map { "used by \($0)" } ?? "unused", t.note ?? ""] }
                        )
                    }
                }
                return
            }
            guard !api else {
                throw LifeboatError("cli.needs-server", "API tokens are listed through the API: log in (`lifeboat login`) or give --server URL")
            }
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            let rows = try catalog.enrollmentTokens().map { t in
                [t.id, "\(t.createdAt)", "\(t.expiresAt)", t.usedBy.map { "used by \($0)" } ?? "unused", t.note ?? ""]
            }
            printTable(["ID", "CREATED", "EXPIRES", "STATE", "NOTE"], rows)
        }
    }
}

struct TokensAPI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Create an API token for a script (printed once; send it as `Authorization: Bearer TOKEN`)."
    )

    @OptionGroup var target: TargetOptions

    @Argument(help: "A name that says where the token is used.")
    var name: String

    @Option(name: .long, help: "Days until it expires (1-366).")
    var days = 90

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let issued: IssuedTokenDTO = try await withClient(client) {
                try await $0.send(.POST, "tokens", body: NewTokenRequest(name: name, days: days))
            }
            print(issued.secret)
            printError("token \(issued.token.id) expires \(issued.token.expiresAt); revoke it with: lifeboat tokens revoke \(issued.token.id)")
        }
    }
}

struct TokensRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke an API token (yours, or anyone's as admin).")

    @OptionGroup var target: TargetOptions

    @Argument(help: "The token's id (tok-…).")
    var id: String

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let token: TokenDTO = try await withClient(client) { try await $0.call(.DELETE, "tokens/\(segment(id))") }
            print("revoked \(token.id) (\(token.name), \(token.user))")
        }
    }
}
