/// Names of machines and volumes: what operators type, what the store records.
///
/// A name is 1 to 128 characters of letters, digits, `.`, `_`, `-` and `:`, not starting with `.` or `-`,
/// so that it is safe in paths, URLs and shell scripts.
public enum Names {
    public static func validate(_ name: String, kind: String) throws {
        guard !name.isEmpty, name.utf8.count <= 128 else {
            throw LifeboatError("name.invalid", "\(kind) name must be 1 to 128 characters, got \(name.utf8.count)")
        }
        guard let first = name.utf8.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else {
            throw LifeboatError("name.invalid", "\(kind) name '\(name)' must not start with '.' or '-'")
        }
        for byte in name.utf8 {
            let ok =
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: ":")
            guard ok else {
                throw LifeboatError(
                    "name.invalid",
                    "\(kind) name '\(name)' may contain only letters, digits, '.', '_', '-' and ':'"
                )
            }
        }
    }
}
