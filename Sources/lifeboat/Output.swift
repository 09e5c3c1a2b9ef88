#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import LifeboatCore
import Logging

enum ProcessEnvironment {
    static func value(_ name: String) -> String? {
        guard let v = getenv(name) else { return nil }
        return String(cString: v)
    }

    static var verbose: Bool { value("LIFEBOAT_VERBOSE") == "1" }

    /// Daemons (`server run`, `agent run`) log at info unless LIFEBOAT_LOG_LEVEL says otherwise; one-shot
    /// commands log warnings only, and everything with LIFEBOAT_VERBOSE=1.
    static var logLevel: Logger.Level {
        if verbose { return .debug }
        if let text = value("LIFEBOAT_LOG_LEVEL"), let level = Logger.Level(rawValue: text) { return level }
        let args = CommandLine.arguments
        if args.count >= 3, ["server", "agent"].contains(args[1]), args[2] == "run" { return .info }
        return .warning
    }
}

func printError(_ text: String) {
    var line = text
    line.append("\n")
    _ = line.withCString { fputs($0, stderr) }
}

/// Text from machines and guests (serial consoles, launcher output) without control characters, which could
/// otherwise drive the operator's terminal (escape sequences); tabs and newlines stay.
func terminalSafe(_ text: String) -> String {
    String(String.UnicodeScalarView(text.unicodeScalars.map { scalar in
        let v = scalar.value
        if v == 9 || v == 10 { return scalar }
        return v < 0x20 || (0x7F...0x9F).contains(v) ? "\u{FFFD}" : scalar
    }))
}

/// Prints rows as an aligned table with a header.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == cells.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count)
        }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}

/// Minimal JSON string escaping for `--json` output.
func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

extension ProcessEnvironment {
    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Parses durations like `90s`, `30m`, `24h`, `7d` into seconds.
func parseDuration(_ text: String) throws -> Int64 {
    let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    guard let unit = text.last, let factor = units[unit], let n = Int64(text.dropLast()), n > 0 else {
        throw LifeboatError("cli.bad-duration", "'\(text)' is not a duration: use e.g. 30m, 24h or 7d")
    }
    return n * factor
}
