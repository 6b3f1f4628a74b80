import Comfy
import Logging
import ServiceLifecycle

/// The gateway process: backends, storage, routes, the drawing WebSocket listener and the front
/// end that takes HTTP requests (the executable's FastCGI server), as one service group.
public struct GatewayApplication: Sendable {
    let configuration: GatewayConfiguration
    let logger: Logger

    public init(configuration: GatewayConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// What the front end that takes requests gets: the responder and the drain hooks.
    public struct FrontEnd: Sendable {
        /// Answers one request.
        public let respond: @Sendable (GatewayRequest) async -> GatewayResponse
        /// Called when draining starts: no new jobs.
        public let stopAccepting: @Sendable () async -> Void
        /// Called when the drain time is up: waiting jobs are answered 503.
        public let abandonWaiting: @Sendable () async -> Void
    }

    /// Runs until SIGTERM or SIGINT has drained the front end that `makeFrontEnd` builds.
    public func run(makeFrontEnd: (FrontEnd) -> any Service) async throws {
        let metricsRegistry = MetricsRoute.bootstrap()
        let http = CurlHTTPClient(threads: 32)
        let parts = try GatewayParts(configuration: configuration, http: http, metrics: metricsRegistry, logger: logger)
        let pool = parts.pool
        let sessions = parts.sessions
        let limits = parts.limits
        let router = parts.router(configuration)
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

        let frontEnd = makeFrontEnd(FrontEnd(
            respond: { [router] in await router.respond(to: $0) },
            stopAccepting: { await pool.stopAccepting() },
            abandonWaiting: { await pool.shutDown() }
        ))
        let group = ServiceGroup(
            configuration: .init(
                // Shut down in reverse order: FastCGI drains first while the backends still run.
                services: [
                    // First in, last out: every other service may still call ComfyUI or a store while it stops.
                    .init(service: http),
                    .init(service: BackendService(pool: pool)),
                    .init(service: SessionSweeper(sessions: sessions, interval: min(configuration.sessionIdleTimeout / 4, .seconds(60)))),
                    .init(service: DrawingGenerations(sessions: sessions)),
                    .init(service: drawingSockets),
                    .init(service: configuration.storage.retentionService(directory: configuration.outputDirectory, logger: logger) {
                        await sessions.resultFilenames()
                    }),
                    .init(service: frontEnd),
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

/// Runs the drawing sessions' generations.
struct DrawingGenerations: Service {
    let sessions: DrawingSessions

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await sessions.run()
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
