import Comfy
import Logging
import ServiceLifecycle

/// The gateway process: backends, storage, routes and the FastCGI server, as one service group.
struct Gateway {
    let configuration: GatewayConfiguration
    let logger: Logger

    func run() async throws {
        let http = CurlHTTPClient(threads: 32)
        defer { http.shutdown() }
        let pool = BackendPool(urls: configuration.comfyServers, http: http, logger: logger)
        let store = LocalImageStore(directory: configuration.outputDirectory, baseURL: configuration.serverBaseURL)

        var router = Router()
        let generate = GenerateRoute(pool: pool, store: store, timeout: configuration.generateTimeout)
        router.add("POST", "/api/generate") { try await generate.generate($0, forceFile: false) }
        router.add("POST", "/api/generate_file") { try await generate.generate($0, forceFile: true) }
        let health = HealthRoute(pool: pool)
        router.add("GET", "/healthz") { await health.health($0) }

        let fastCGI = FastCGIServer(
            socketPath: configuration.socketPath,
            threads: configuration.threads,
            maxBodyBytes: configuration.maxBodyBytes,
            logger: logger,
            handler: { [router] in await router.respond(to: $0) }
        )
        let group = ServiceGroup(
            configuration: .init(
                // Shut down in reverse order: FastCGI drains first while the backends still run.
                services: [.init(service: BackendService(pool: pool)), .init(service: fastCGI)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
    }
}

/// Keeps the backends' WebSockets open until graceful shutdown.
struct BackendService: Service {
    let pool: BackendPool

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await pool.run()
        }
    }
}
