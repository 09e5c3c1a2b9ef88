import Foundation
import Hummingbird
import LifeboatAPI
import LifeboatCore
import NIOCore

/// Reading and writing JSON bodies. Requests are strict: a body that is not JSON, misses a field, has a field
/// of the wrong type or a field the API does not know is refused with a 400 that names the field.
enum JSONBody {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try encoder.encode(value)
        return Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    /// Collects the body (at most `API.maxBodyBytes`) and decodes it.
    static func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: API.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "request.too-large", "the request body is larger than \(API.maxBodyBytes / 1024) KiB")
        }
        return try decode(type, from: Data(buffer.readableBytesView), contentType: request.headers[.contentType])
    }

    static func decode<T: Decodable>(_ type: T.Type, from data: Data, contentType: String?) throws -> T {
        // Required, not only checked when present: a cross-site "simple" request (no preflight) cannot send it.
        guard let contentType, contentType.lowercased().hasPrefix("application/json") else {
            throw APIError(
                .unsupportedMediaType, "request.content-type",
                "send the body as application/json (Content-Type: \(contentType ?? "missing"))"
            )
        }
        guard !data.isEmpty else {
            throw APIError(.badRequest, "request.empty-body", "this request needs a JSON body")
        }
        let tree: Any
        do {
            tree = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw APIError(.badRequest, "request.invalid-json", "the body is not valid JSON: check quotes, commas and brackets")
        }
        let value: T
        do {
            value = try JSONDecoder().decode(T.self, from: data)
        } catch let error as DecodingError {
            throw APIError(.badRequest, "request.invalid-field", describe(error))
        } catch let error as LifeboatError {
            throw APIError(.badRequest, error.code.rawValue, error.message)
        }
        if let null = nullField(tree, path: "") {
            throw APIError(.badRequest, "request.null-field", "field '\(null)' is null: leave a field out instead of sending null")
        }
        if let unknown = unknownField(tree, known: value, path: "") {
            throw APIError(
                .badRequest,
                "request.unknown-field",
                "unknown field '\(unknown)': check its spelling against /api/v1/openapi.json"
            )
        }
        return value
    }

    /// The first field whose value is JSON null (nested objects and arrays too).
    static func nullField(_ tree: Any, path: String) -> String? {
        if let object = tree as? [String: Any] {
            for (key, value) in object.sorted(by: { $0.key < $1.key }) {
                let name = path.isEmpty ? key : path + "." + key
                if value is NSNull { return name }
                if let found = nullField(value, path: name) { return found }
            }
        } else if let array = tree as? [Any] {
            for (index, value) in array.enumerated() {
                let name = "\(path)[\(index)]"
                if value is NSNull { return name }
                if let found = nullField(value, path: name) { return found }
            }
        }
        return nil
    }

    /// The first key of `tree` that the decoded value has no property for (nested objects too).
    static func unknownField(_ tree: Any, known value: Any, path: String) -> String? {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            guard let child = mirror.children.first else { return nil }
            return unknownField(tree, known: child.value, path: path)
        }
        switch mirror.displayStyle {
        case .struct, .class:
            guard let object = tree as? [String: Any] else { return nil }
            var properties: [String: Any] = [:]
            for child in mirror.children {
                if let label = child.label { properties[label] = child.value }
            }
            for (key, subtree) in object.sorted(by: { $0.key < $1.key }) {
                let name = path.isEmpty ? key : path + "." + key
                guard let property = properties[key] else { return name }
                if let found = unknownField(subtree, known: property, path: name) { return found }
            }
            return nil
        case .collection:
            guard let array = tree as? [Any] else { return nil }
            let elements = mirror.children.map(\.value)
            for (index, (subtree, element)) in zip(array, elements).enumerated() {
                if let found = unknownField(subtree, known: element, path: "\(path)[\(index)]") { return found }
            }
            return nil
        default:
            return nil
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let text = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return text.isEmpty ? "the body" : "field '\(text.replacingOccurrences(of: ".[", with: "["))'"
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context)
            return "field '\(key.stringValue)' is required" + (parent == "the body" ? "" : " in \(parent)")
        case .typeMismatch(let type, let context):
            return "\(path(context)) must be \(typeName(type))"
        case .valueNotFound(let type, let context):
            return "\(path(context)) must be \(typeName(type)), not null"
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            // The text parsed as JSON, so what the decoder could not take is a number that does not fit its field.
            return "a number in the body does not fit its field: integers must be whole numbers within their documented range"
        case .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "the body does not match what this request expects"
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        let name = String(describing: type)
        switch name {
        case "String": return "a string"
        case "Int", "Int64", "UInt32", "UInt64", "Int32": return "an integer"
        case "Double": return "a number"
        case "Bool": return "true or false"
        case _ where name.hasPrefix("Array"): return "an array"
        case _ where name.hasPrefix("Dictionary"): return "an object"
        default: return "an object"
        }
    }
}
