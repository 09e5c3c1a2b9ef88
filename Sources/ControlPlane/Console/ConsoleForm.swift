import Foundation
import Hummingbird
import LifeboatAPI
import NIOCore

/// A posted HTML form (`application/x-www-form-urlencoded`), repeated names kept in order.
struct ConsoleForm {
    private(set) var fields: [(name: String, value: String)] = []

    static func read(_ request: Request) async throws -> ConsoleForm {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: API.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "request.too-large", "the form is larger than \(API.maxBodyBytes / 1024) KiB")
        }
        return ConsoleForm(encoded: String(buffer: buffer))
    }

    init(encoded: String) {
        for pair in encoded.split(separator: "&") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            fields.append((decode(parts[0]), parts.count > 1 ? decode(parts[1]) : ""))
        }
    }

    func value(_ name: String) -> String? { fields.first { $0.name == name }?.value }

    func values(_ name: String) -> [String] { fields.filter { $0.name == name }.map(\.value) }

    /// A trimmed value that must be present.
    func required(_ name: String, _ what: String) throws -> String {
        guard let text = value(name)?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty else {
            throw APIError(.badRequest, "request.invalid-field", "\(what) is required")
        }
        return text
    }
}
