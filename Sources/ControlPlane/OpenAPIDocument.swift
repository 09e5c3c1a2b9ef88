/// The OpenAPI 3.1 document of the REST API, compiled into the binary from `Resources/openapi.json`.
enum OpenAPIDocument {
    static var bytes: [UInt8] { PackageResources.openapi_json }
}
