import ArgumentParser
import Catalog
import LifeboatCore
import ReplicationServer
import ReplicationTransport

struct TokensCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens",
        abstract: "One-time enrollment tokens for agents.",
        subcommands: [TokensCreate.self, TokensList.self],
        defaultSubcommand: TokensList.self
    )
}

struct TokensCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Print a one-time token that enrolls one agent (with the CA fingerprint the agent pins)."
    )

    @OptionGroup var data: DataOptions

    @Option(name: .long, help: "How long the token is valid (e.g. 30m, 24h, 7d).")
    var expires: String = "24h"

    @Option(name: .long, help: "A note for the token list (e.g. the machine it is for).")
    var note: String?

    func run() throws {
        try lifeboat.run {
            let seconds = try parseDuration(expires)
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

struct TokensList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List enrollment tokens (never their secrets).")

    @OptionGroup var data: DataOptions

    func run() throws {
        try lifeboat.run {
            let catalog = try data.openCatalog()
            defer { catalog.close() }
            let rows = try catalog.enrollmentTokens().map { t in
                [t.id, "\(t.createdAt)", "\(t.expiresAt)", t.usedBy.map { "used by \($0)" } ?? "unused", t.note ?? ""]
            }
            printTable(["ID", "CREATED", "EXPIRES", "STATE", "NOTE"], rows)
        }
    }
}
