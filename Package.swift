// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "comfy-gateway",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "FCGIApp", targets: ["FCGIApp"]),
        .library(name: "Comfy", targets: ["Comfy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Thin module maps over the system C libraries; only one Swift folder imports each.
        .systemLibrary(name: "CFastCGI", path: "Sources/CFastCGI"),
        .systemLibrary(name: "CCurl", path: "Sources/CCurl"),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL"),
        .systemLibrary(name: "CImageCodecs", path: "Sources/CImageCodecs"),
        .target(
            name: "Comfy",
            dependencies: [
                "CCurl",
                "COpenSSL",
                "CImageCodecs",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                // For the SQLite it vendors (module VaporCSQLite): SQLiteDatabase keeps compiled statements.
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // The HTTP front (configuration, router, routes, errors, the drawing WebSocket listener,
        // the nginx site): no C library, so route tests call it in-process.
        .target(
            name: "GatewayApp",
            dependencies: [
                "Comfy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The process: libfcgi's threads, the supervisor and `main`.
        .executableTarget(
            name: "FCGIApp",
            dependencies: [
                "GatewayApp",
                "Comfy",
                "CFastCGI",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // A private PostgreSQL server for the tests of the shared job store.
        .target(name: "PostgresCluster", path: "Tests/Support/PostgresCluster"),
        .testTarget(
            name: "ComfyTests",
            dependencies: ["Comfy", "PostgresCluster", .product(name: "PostgresNIO", package: "postgres-nio")],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "GatewayAppTests",
            dependencies: [
                "GatewayApp",
                "Comfy",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "FCGIAppTests",
            dependencies: [
                "Comfy",
                "PostgresCluster",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)
