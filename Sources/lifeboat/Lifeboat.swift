import ArgumentParser
import LifeboatCore
import Logging

@main
struct Lifeboat: ParsableCommand {
    static func main() {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessEnvironment.verbose ? .debug : .warning
            return handler
        }
        Self.main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "lifeboat",
        abstract: "Disaster recovery for Linux servers: block-level replication, recovery points, instant launch.",
        version: "0.1.0",
        subcommands: [StoreCommand.self]
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
