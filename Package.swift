// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Lifeboat",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lifeboat", targets: ["lifeboat"]),
        .library(name: "StagingStore", targets: ["StagingStore"]),
        .library(name: "LifeboatCore", targets: ["LifeboatCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // Domain values and pure logic: no I/O, no heavy dependencies.
        .target(name: "LifeboatCore"),

        // System calls with errno mapped to actionable errors, shared by the engine and the agent.
        .target(
            name: "LifeboatSystem",
            dependencies: ["LifeboatCore", "CLinuxShims", .product(name: "SystemPackage", package: "swift-system")]
        ),

        // Linux calls that Glibc's Swift module does not expose.
        .target(name: "CLinuxShims"),

        // The system's zstd (Debian: libzstd-dev).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),

        // The storage engine: chunks, packs, volume maps, commits, retention, verify.
        .target(
            name: "StagingStore",
            dependencies: [
                "LifeboatCore",
                "LifeboatSystem",
                "CZstd",
                "CLinuxShims",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // How an agent learns which blocks of a volume changed: the ChangeTracker protocol and its trackers.
        // NIOSSL for its BoringSSL (CNIOBoringSSL): block fingerprints seal with one shared AEAD context.
        .target(
            name: "ChangeTracking",
            dependencies: [
                "LifeboatCore",
                "LifeboatSystem",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),

        // The agent ↔ replication server wire protocol: messages, frame codec, session state machines (pure).
        .target(name: "ReplicationProtocol", dependencies: ["LifeboatCore"]),

        // Persistent control-plane state (SQLite through GRDB, with migrations): machines, enrollment tokens,
        // revoked certificates, replication status.
        .target(
            name: "Catalog",
            dependencies: [
                "LifeboatCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
            ]
        ),

        // What agent and server share on the wire below the protocol: the certificate authority, CSRs and
        // certificates (swift-certificates), TLS 1.3 configurations, NIO channel handlers for frames.
        .target(
            name: "ReplicationTransport",
            dependencies: [
                "LifeboatCore",
                "LifeboatSystem",
                "ReplicationProtocol",
                "CZstd",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The replication server: accepts agent sessions, writes the staging store, records state in the catalog.
        .target(
            name: "ReplicationServer",
            dependencies: [
                "LifeboatCore",
                "LifeboatSystem",
                "StagingStore",
                "Catalog",
                "ReplicationProtocol",
                "ReplicationTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The source-side service: volumes, change trackers, consistent capture (FIFREEZE), throttled upload.
        .target(
            name: "Agent",
            dependencies: [
                "LifeboatCore",
                "LifeboatSystem",
                "CLinuxShims",
                "ChangeTracking",
                "ReplicationProtocol",
                "ReplicationTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),

        // Recovery: the NBD server that exports recovery points as instant disks (read-only or through a
        // copy-on-write overlay that belongs to one recovery instance), launchers, acceptance checks, launch jobs.
        .target(
            name: "Recovery",
            dependencies: [
                "LifeboatCore",
                "LifeboatSystem",
                "StagingStore",
                "Catalog",
                "CLinuxShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),

        // The REST API's request and response bodies (Codable, no I/O): shared by the server and its clients.
        .target(name: "LifeboatAPI", dependencies: ["LifeboatCore"]),

        // The control plane: the REST API under /api/v1 (Hummingbird, HTTPS), users and roles, sessions and API
        // tokens, incidents, the audit log, objectives, Prometheus metrics.
        .target(
            name: "ControlPlane",
            dependencies: [
                "LifeboatCore",
                "LifeboatAPI",
                "Catalog",
                "StagingStore",
                "Recovery",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.embedInCode("Resources/openapi.json")]
        ),

        // A client of the REST API (AsyncHTTPClient, the server's CA pinned): what the command line uses remotely.
        .target(
            name: "ControlPlaneClient",
            dependencies: [
                "LifeboatCore",
                "LifeboatAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),

        // Fixtures shared by tests and benchmarks: temporary directories, generated images, child processes.
        .target(
            name: "LifeboatTesting",
            dependencies: ["LifeboatCore", "StagingStore"]
        ),

        // The one binary: thin wiring of the modules above.
        .executableTarget(
            name: "lifeboat",
            dependencies: [
                "LifeboatCore",
                "StagingStore",
                "Catalog",
                "ReplicationTransport",
                "ReplicationServer",
                "Recovery",
                "Agent",
                "LifeboatSystem",
                "LifeboatAPI",
                "ControlPlane",
                "ControlPlaneClient",
                "LifeboatTesting",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        .testTarget(name: "LifeboatCoreTests", dependencies: ["LifeboatCore"]),
        .testTarget(
            name: "ChangeTrackingTests",
            dependencies: ["ChangeTracking", "LifeboatCore", "LifeboatTesting", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .testTarget(name: "ReplicationProtocolTests", dependencies: ["ReplicationProtocol", "LifeboatCore"]),
        .testTarget(
            name: "CatalogTests",
            dependencies: ["Catalog", "LifeboatCore", "LifeboatTesting", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .testTarget(
            name: "ReplicationTransportTests",
            dependencies: [
                "ReplicationTransport", "ReplicationProtocol", "LifeboatCore", "LifeboatTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .testTarget(
            name: "ReplicationTests",
            dependencies: [
                "StagingStore", "Catalog", "LifeboatCore", "LifeboatTesting", "ControlPlane", "ControlPlaneClient", "LifeboatAPI",
            ]
        ),
        .testTarget(
            name: "AgentTests",
            dependencies: [
                "Agent", "ChangeTracking", "LifeboatCore", "LifeboatSystem", "LifeboatTesting",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "StagingStoreTests",
            dependencies: ["StagingStore", "LifeboatCore", "LifeboatTesting"]
        ),
        .testTarget(
            name: "RecoveryTests",
            dependencies: [
                "Recovery", "StagingStore", "LifeboatCore", "LifeboatTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "LifeboatCLITests",
            dependencies: ["StagingStore", "ChangeTracking", "LifeboatCore", "LifeboatTesting"]
        ),
    ]
)

// Strict settings for every Swift target, once.
for target in package.targets where target.type != .system && target.name != "CLinuxShims" {
    var settings = target.swiftSettings ?? []
    settings.append(.enableUpcomingFeature("ExistentialAny"))
    settings.append(.enableUpcomingFeature("MemberImportVisibility"))
    settings.append(.enableUpcomingFeature("InternalImportsByDefault"))
    settings.append(.swiftLanguageMode(.v6))
    // The test script sets LIFEBOAT_WERROR=1: our own targets build warning-free (dependencies are not affected).
    if Context.environment["LIFEBOAT_WERROR"] == "1" {
        settings.append(.unsafeFlags(["-warnings-as-errors"]))
    }
    target.swiftSettings = settings
}
