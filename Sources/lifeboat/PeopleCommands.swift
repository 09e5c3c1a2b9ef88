import ArgumentParser
import Catalog
import ControlPlane
import ControlPlaneClient
import Foundation
import LifeboatAPI
import LifeboatCore

// `users`, `audit`, `access`. `users create|list|set` and `audit list|verify` also work on the server host with
// --data (the first admin is made so, before anyone can log in); each local change is in the audit log too.

struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users",
        abstract: "People and their roles: analyst, decider, operator, admin (a user may hold several).",
        subcommands: [UsersList.self, UsersCreate.self, UsersSet.self, UsersDelete.self],
        defaultSubcommand: UsersList.self
    )
}

/// Who made a change from the server host's command line, for the audit log.
func localActor() -> String {
    "local:" + (ProcessEnvironment.value("SUDO_USER") ?? ProcessEnvironment.value("USER") ?? "root")
}

struct UsersList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Users and their roles.")

    @OptionGroup var target: TargetOptions
    @Flag(name: .long, help: "Print JSON for scripts.") var json = false

    func run() async throws {
        try await runAsync {
            let users: [UserDTO]
            switch try target.resolve() {
            case .remote(let client):
                users = try await withClient(client) { try await $0.get("users") }
            case .local(let data):
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                users = try catalog.users().map(DTO.user)
            }
            if json { return try printJSON(users) }
            printTable(
                ["USER", "ROLES", "STATE", "CREATED", "PASSWORD CHANGED"],
                users.map { [$0.name, $0.roles.map(\.rawValue).joined(separator: ","), $0.disabled ? "disabled" : "active", $0.createdAt, $0.passwordChangedAt] }
            )
        }
    }
}

struct UsersCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a user (admin; or on the server host with --data, e.g. the first admin)."
    )

    @OptionGroup var target: TargetOptions
    @Argument(help: "The user name.") var name: String
    @Option(name: .long, help: "Roles, comma-separated: analyst, decider, operator, admin.") var roles: String
    @Flag(name: .long, help: "Read the password from the first line of standard input.") var passwordStdin = false

    func run() async throws {
        try await runAsync {
            let roleSet = try Role.parseList(roles)
            guard !roleSet.isEmpty else { throw LifeboatError("user.no-roles", "--roles: give at least one role") }
            let password = try readPassword(fromStdin: passwordStdin, prompt: "Password for \(name): ")
            switch try target.resolve() {
            case .remote(let client):
                let user: UserDTO = try await withClient(client) {
                    try await $0.send(.POST, "users", body: NewUserRequest(name: name, password: password, roles: roleSet.sorted()))
                }
                print("created user \(user.name) with roles \(user.roles.map(\.rawValue).joined(separator: ", "))")
            case .local(let data):
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                let user = try catalog.createUser(name: name, password: password, roles: roleSet)
                _ = try catalog.appendAudit(
                    actor: localActor(), action: "CLI users create", target: "user \(name)", source: "local", result: "201",
                    detail: "roles \(roleSet.sorted().map(\.rawValue).joined(separator: ","))"
                )
                print("created user \(user.name) with roles \(user.roles.sorted().map(\.rawValue).joined(separator: ", "))")
            }
        }
    }
}

struct UsersSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Change a user's roles, password, or disable/enable them (admin).")

    @OptionGroup var target: TargetOptions
    @Argument(help: "The user name.") var name: String
    @Option(name: .long, help: "The new roles (replace the old ones).") var roles: String?
    @Flag(name: .long, help: "Set a new password, read from standard input.") var passwordStdin = false
    @Flag(name: .long, help: "Disable the user (their tokens and sessions are revoked).") var disable = false
    @Flag(name: .long, help: "Enable a disabled user.") var enable = false

    func run() async throws {
        try await runAsync {
            guard !(disable && enable) else { throw LifeboatError("cli.usage", "give --disable or --enable, not both") }
            let roleSet = try roles.map(Role.parseList)
            let password = passwordStdin ? try readPassword(fromStdin: true, prompt: "") : nil
            let disabled: Bool? = disable ? true : (enable ? false : nil)
            switch try target.resolve() {
            case .remote(let client):
                let user: UserDTO = try await withClient(client) {
                    try await $0.send(.PATCH, "users/\(segment(name))", body: UserUpdate(roles: roleSet?.sorted(), password: password, disabled: disabled))
                }
                print("user \(user.name): roles \(user.roles.map(\.rawValue).joined(separator: ", ")), \(user.disabled ? "disabled" : "active")")
            case .local(let data):
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                if let roleSet { _ = try catalog.setRoles(user: name, roles: roleSet) }
                if let password { try catalog.setPassword(user: name, password: password) }
                if let disabled { _ = try catalog.setUserDisabled(name, disabled: disabled) }
                _ = try catalog.appendAudit(
                    actor: localActor(), action: "CLI users set", target: "user \(name)", source: "local", result: "200",
                    detail: [roleSet.map { "roles \($0.sorted().map(\.rawValue).joined(separator: ","))" }, password.map { _ in "password" }, disabled.map { $0 ? "disable" : "enable" }].compactMap { $0 }.joined(separator: ", ")
                )
                print("user \(name) updated")
            }
        }
    }
}

struct UsersDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a user and their tokens (admin).")

    @OptionGroup var target: TargetOptions
    @Argument(help: "The user name.") var name: String

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let _: [String: String] = try await withClient(client) { try await $0.call(.DELETE, "users/\(segment(name))") }
            print("deleted user \(name)")
        }
    }
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "The audit log: who changed what, when, from where, with what result; hash-chained.",
        subcommands: [AuditList.self, AuditVerify.self],
        defaultSubcommand: AuditList.self
    )
}

struct AuditList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The newest entries.")

    @OptionGroup var target: TargetOptions
    @Option(name: .long, help: "How many entries.") var limit = 50
    @Option(name: .long, help: "Only this actor's entries.") var actor: String?
    @Flag(name: .long, help: "Print JSON for scripts.") var json = false

    func run() async throws {
        try await runAsync {
            let entries: [AuditEntryDTO]
            switch try target.resolve() {
            case .remote(let client):
                let page: Page<AuditEntryDTO> = try await withClient(client) {
                    try await $0.get("audit", query: ["limit": "\(max(1, min(limit, 500)))", "actor": actor])
                }
                entries = page.items
            case .local(let data):
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                entries = try catalog.auditEntries(afterSeq: 0, limit: limit, newestFirst: true, actor: actor, action: nil).map(DTO.audit)
            }
            if json { return try printJSON(entries) }
            printTable(
                ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "FROM", "RESULT", "DETAIL"],
                entries.map { ["\($0.seq)", $0.time, $0.actor, $0.action, $0.target, $0.source, $0.result, $0.detail] }
            )
        }
    }
}

struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the hash chain: any edited, deleted, inserted or reordered entry is found. Exit 1 if so."
    )

    @OptionGroup var target: TargetOptions
    @Option(name: .long, help: "A head hash printed by an earlier verify: it must still be in the chain.") var expectHead: String?
    @Flag(name: .long, help: "Print JSON for scripts.") var json = false

    func run() async throws {
        try await runAsync {
            let result: AuditVerificationDTO
            switch try target.resolve() {
            case .remote(let client):
                result = try await withClient(client) { try await $0.get("audit/verify", query: ["expectHead": expectHead]) }
            case .local(let data):
                let catalog = try data.openCatalog()
                defer { catalog.close() }
                result = DTO.verification(try catalog.verifyAudit(expectHead: expectHead))
            }
            if json {
                try printJSON(result)
            } else if result.intact {
                print("audit log intact: \(result.entries) entries, head \(result.headSeq) \(result.headHash)")
                print("keep the head hash; later: lifeboat audit verify --expect-head \(result.headHash)")
            } else {
                print("AUDIT LOG TAMPERED: \(result.problems.count) problem(s) in \(result.entries) entries")
                for p in result.problems { print("  entry \(p.seq): \(p.kind): \(p.message)") }
            }
            if !result.intact { throw ExitCode(1) }
        }
    }
}

struct AccessCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access",
        abstract: "Who holds each DR role, and a live check that each of them really can act.",
        subcommands: [AccessList.self, AccessCheckCommand.self],
        defaultSubcommand: AccessList.self
    )
}

struct AccessList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Each role, what it may do, who holds it.")

    @OptionGroup var target: TargetOptions

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let roles: [AccessRoleDTO] = try await withClient(client) { try await $0.get("access") }
            printTable(
                ["ROLE", "HOLDERS", "MAY"],
                roles.map { [$0.role.rawValue, $0.holders.isEmpty ? "NOBODY" : $0.holders.joined(separator: ","), $0.permissions.map(\.rawValue).joined(separator: ", ")] }
            )
        }
    }
}

struct AccessCheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Verify live that every role has a holder who really can act (read-only probes and dry runs; nothing changes). Exit 1 if not."
    )

    @OptionGroup var target: TargetOptions
    @Flag(name: .long, help: "Print JSON for scripts.") var json = false

    func run() async throws {
        try await runAsync {
            let client = try target.remote()
            let check: AccessCheckDTO = try await withClient(client) { try await $0.get("access/check") }
            if json {
                try printJSON(check)
            } else {
                for role in check.roles {
                    print("\(role.role.rawValue): \(role.summary)")
                    for problem in role.problems { print("  ✗ \(problem)") }
                    for holder in role.holders {
                        print("  \(holder.ok ? "✓" : "✗") \(holder.user)")
                        for problem in holder.problems { print("      ✗ \(problem)") }
                        for probe in holder.probes {
                            let outcome = "\(probe.status)" + (probe.code.map { " \($0)" } ?? "")
                            print("      \(probe.ok ? "✓" : "✗") \(probe.purpose) (\(probe.method) \(probe.path)\(probe.dryRun ? ", dry run" : ""): \(outcome))")
                        }
                    }
                }
                print(check.ok ? "every role has a holder who can act" : "ACCESS CHECK FAILED: see ✗ above")
            }
            if !check.ok { throw ExitCode(1) }
        }
    }
}
