import LifeboatCore

/// Building HTML safely: every piece of text that did not come from this file goes through `escape`.
enum HTML {
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A URL query value or path segment.
    static func component(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// A coloured status icon with its text (never colour alone): `tone` picks the colour.
    static func status(_ text: String, tone: Tone, title: String? = nil) -> String {
        "<span class=\"status \(tone.rawValue)\"\(title.map { " title=\"\(escape($0))\"" } ?? "")><span class=\"dot\" aria-hidden=\"true\"></span>\(escape(text))</span>"
    }

    enum Tone: String {
        case good, warn, bad, idle, info, drill
    }

    /// Seconds as `42s`, `3m 12s`, `2h 5m`, `3d 4h`.
    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m \(s % 60)s" }
        if s < 86400 { return "\(s / 3600)h \(s % 3600 / 60)m" }
        return "\(s / 86400)d \(s % 86400 / 3600)h"
    }

    /// "2 days ago", "just now", for a time in the past.
    static func ago(_ time: Timestamp, now: Timestamp) -> String {
        let seconds = Double(now.nanoseconds - time.nanoseconds) / 1e9
        if seconds < 60 { return "just now" }
        if seconds < 3600 { return "\(Int(seconds / 60)) min ago" }
        if seconds < 86400 { return "\(Int(seconds / 3600)) h ago" }
        let days = Int(seconds / 86400)
        return days == 1 ? "1 day ago" : "\(days) days ago"
    }

    /// A short UTC time for tables: `2026-11-30 14:02:07`.
    static func time(_ t: Timestamp) -> String {
        let text = t.rfc3339
        return String(text.prefix(19)).replacingOccurrences(of: "T", with: " ")
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }

    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
