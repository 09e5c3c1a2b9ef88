import ArgumentParser
import LifeboatCore
import Logging

@main
struct Lifeboat: AsyncParsableCommand {
    static func main() async {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessEnvironment.logLevel
            return handler
        }
        do {
            var command = try parseAsRoot(nil)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "lifeboat",
        abstract: "Disaster recovery for Linux servers: block-level replication, recovery points, instant launch.",
        version: "0.4.0",
        subcommands: [
            ServerCommand.self, TokensCommand.self, MachinesCommand.self, AgentCommand.self, LaunchCommand.self,
            JobsCommand.self, InstancesCommand.self, PointsCommand.self, ExportCommand.self, StoreCommand.self,
            LoginCommand.self, LogoutCommand.self, ApplicationsCommand.self, IncidentsCommand.self, UsersCommand.self,
            SettingsCommand.self, AuditCommand.self, AccessCommand.self,
        ]
    )
}

/// Runs a command body and turns a `LifeboatError` into one clear line on stderr and exit status 1.
func run(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as LifeboatError {
        printError("lifeboat: error: \(error.description)")
        if ProcessEnvironment.verbose { printError(error.detailedDescription()) }
        throw ExitCode(1)
    }
}

/// `run` for async command bodies.
func runAsync(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as LifeboatError {
        printError("lifeboat: error: \(error.description)")
        if ProcessEnvironment.verbose { printError(error.detailedDescription()) }
        throw ExitCode(1)
    }
}
