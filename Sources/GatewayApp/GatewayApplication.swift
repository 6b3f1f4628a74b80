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
        let pool = BackendPool(
            urls: configuration.comfyServers, http: http, configuration: configuration.scheduler, timing: configuration.backendTiming, logger: logger
        )
        let local = LocalImageStore(directory: configuration.outputDirectory, baseURL: configuration.serverBaseURL)
        let store = try configuration.storage.makeStore(local: local, http: http, logger: logger)

        var router = Router(crossOrigin: CrossOriginPolicy(origins: configuration.apiOrigins))
        // Keep FastCGI threads for everything else while generate calls wait on the GPUs.
        let generateLimit = ConcurrencyLimit(max(1, configuration.threads - max(8, configuration.threads / 8)))
        let generate = GenerateRoute(
            pool: pool, store: store, timeout: configuration.generateTimeout, limit: generateLimit, policy: configuration.nodePolicy
        )
        router.add("POST", "/api/generate", body: .json) { try await generate.generate($0, forceFile: false) }
        router.add("POST", "/api/generate_file", body: .json) { try await generate.generate($0, forceFile: true) }
        let styles = StyleLibrary(directory: configuration.workflowDirectory, logger: logger)
        let sessions = DrawingSessions(
            pool: pool,
            styles: styles,
            store: store,
            configuration: .init(jobTimeout: configuration.sketchTimeout, idleTimeout: configuration.sessionIdleTimeout, maxSessions: configuration.maxSessions),
            logger: logger
        )
        let limits = SketchLimits(maxBytes: configuration.maxSketchBytes, maxPixels: configuration.maxSketchPixels)
        let sketch = SketchRoute(sessions: sessions, styles: styles, limits: limits)
        router.add("GET", "/api/styles") { await sketch.listStyles($0) }
        router.add("POST", "/api/sketch", body: .multipart) { try await sketch.upload($0) }
        router.add("GET", prefix: "/api/result/") { try await sketch.result($0) }
        let health = HealthRoute(pool: pool, styles: styles)
        router.add("GET", "/healthz") { await health.health($0) }
        let metrics = MetricsRoute(registry: metricsRegistry, sessions: sessions)
        router.add("GET", "/metrics") { await metrics.metrics($0) }
        let drawingSockets = DrawingSocketServer(
            socketPath: configuration.webSocketPath,
            sessions: sessions,
            limits: limits,
            // base64 makes a sketch 4/3 larger; the JSON around it is small.
            maxMessageBytes: configuration.maxSketchBytes * 4 / 3 + 64 * 1024,
            pingInterval: configuration.pingInterval,
            origins: configuration.drawingOrigins,
            logger: logger
        )

        let fastCGI = FastCGIServer(
            socketPath: configuration.socketPath,
            threads: configuration.threads,
            maxBodyBytes: configuration.maxBodyBytes,
            drainTimeout: configuration.drainTimeout,
            logger: logger,
            onDrain: { await pool.stopAccepting() },
            onDrainTimeout: { await pool.shutDown() },
            handler: { [router] in await router.respond(to: $0) }
        )
        let group = ServiceGroup(
            configuration: .init(
                // Shut down in reverse order: FastCGI drains first while the backends still run.
                services: [
                    .init(service: BackendService(pool: pool)),
                    .init(service: SessionSweeper(sessions: sessions, interval: min(configuration.sessionIdleTimeout / 4, .seconds(60)))),
                    .init(service: drawingSockets),
                    .init(service: configuration.storage.retentionService(directory: configuration.outputDirectory, logger: logger) {
                        await sessions.resultFilenames()
                    }),
                    .init(service: fastCGI),
                ],
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

/// Drops idle drawing sessions now and then.
struct SessionSweeper: Service {
    let sessions: DrawingSessions
    let interval: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await sessions.sweepIdle()
            }
        }
    }
}
