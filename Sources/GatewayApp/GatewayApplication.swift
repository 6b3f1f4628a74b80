import Foundation
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
        // Input image URLs: at most 16 fetches at once, each bounded by INPUT_MAX_BYTES, and 4 of
        // them one caller's (`InputImages.fetchShares`).
        let outbound = CurlHTTPClient(threads: 16, maxResponseBytes: configuration.inputLimits.maxBytes)
        // Webhooks go to callers' servers: one that never answers, or answers without end, holds
        // at most these threads for WEBHOOK_TIMEOUT (none ComfyUI calls need) and 64 KiB each.
        let webhookHTTP = CurlHTTPClient(threads: WebhookSender.connections, maxResponseBytes: 64 << 10)
        if case .sqlite = configuration.jobs.store { try Self.lockJobDatabase(configuration.jobs) }
        let jobStore = try await Self.openJobStore(configuration.jobs, logger: logger)
        let parts = try GatewayParts(
            configuration: configuration, http: http, outbound: outbound, webhookHTTP: webhookHTTP, jobStore: jobStore, metrics: metricsRegistry,
            logger: logger
        )
        let jobs = parts.jobs
        let pool = parts.pool
        let sessions = parts.sessions
        let limits = parts.limits
        let router = parts.router(configuration)
        let drawingSockets = DrawingSocketServer(
            socketPath: configuration.webSocketPath,
            sessions: sessions,
            jobs: jobs,
            gate: parts.gate,
            limits: limits,
            maxMessageBytes: configuration.maxSocketMessageBytes,
            receiveBudget: ReceiveBudget(limit: configuration.webSocketReceiveBudget, largestMessage: configuration.maxSocketMessageBytes),
            messageTimeout: configuration.webSocketMessageTimeout,
            pingInterval: configuration.pingInterval,
            peers: configuration.listenerPeers,
            origins: configuration.drawingOrigins,
            hosts: configuration.hosts,
            tokens: parts.sessionTokens,
            logger: logger,
            grantSocket: { [site = NginxSite(configuration: configuration)] in site.grantSocket($0) }
        )

        let frontEnd = makeFrontEnd(FrontEnd(
            respond: { [router] in await router.respond(to: $0) },
            stopAccepting: {
                await jobs.stopStarting()
                await pool.stopAccepting()
            },
            abandonWaiting: { await pool.shutDown() }
        ))
        let group = ServiceGroup(
            configuration: .init(
                // Shut down in reverse order: FastCGI drains first while the backends still run.
                services: [
                    // First in, last out: every other service may still call ComfyUI or a store while it stops.
                    .init(service: http),
                    .init(service: outbound),
                    .init(service: webhookHTTP),
                    .init(service: BackendService(pool: pool)),
                    .init(service: SessionSweeper(sessions: sessions, interval: min(configuration.sessionIdleTimeout / 4, .seconds(60)))),
                    .init(service: DrawingGenerations(sessions: sessions)),
                    .init(service: JobRunnerService(runner: jobs)),
                    .init(service: WebhookService(sender: parts.webhooks)),
                    .init(service: JobRetentionService(store: jobStore, inputs: parts.inputs, retention: configuration.jobs.retention, logger: logger)),
                    .init(service: drawingSockets),
                    .init(service: configuration.storage.retentionService(directory: configuration.outputDirectory, logger: logger) {
                        try await sessions.resultFilenames()
                    }),
                    .init(service: frontEnd),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
        await jobStore.close()
    }

    /// Holds `STATE_DIR/jobs.lock` while this process serves: two that ran the jobs of one
    /// SQLite file would both take up its unfinished jobs and both send its webhooks, and each
    /// count its keys' rates alone. `make keys` opens the store without it.
    static func lockJobDatabase(_ configuration: JobConfiguration) throws {
        let path = "\(configuration.stateDirectory)/jobs.lock"
        try? FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        do {
            // A few seconds' grace: the process it replaces (killed, restarted) may still be on its way out.
            try ProcessLock.take(path, waitingUpTo: .seconds(10))
        } catch .held {
            throw ConfigurationError(
                variable: "STATE_DIR",
                problem: "another gateway serves the jobs in \(configuration.databasePath); give each gateway its own STATE_DIR, or let several share jobs through JOB_STORE=postgres://..."
            )
        } catch .unusable(let reason) {
            throw ConfigurationError(variable: "STATE_DIR", problem: "cannot open \(path): \(reason)")
        }
    }

    /// Opens the job store: `STATE_DIR/jobs.sqlite` (creating the folder), or the shared
    /// PostgreSQL one of `JOB_STORE`. A database from a newer gateway stops the start.
    static func openJobStore(_ configuration: JobConfiguration, logger: Logger) async throws -> any JobStore {
        do {
            try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError(variable: "STATE_DIR", problem: "cannot create \(configuration.stateDirectory): \(error.localizedDescription)")
        }
        switch configuration.store {
        case .sqlite:
            return try await SQLiteJobStore.open(path: configuration.databasePath, logger: logger)
        case .postgres(let url):
            let store = try await PostgresJobStore.open(url: url, leaseTimeout: configuration.leaseTimeout, logger: logger)
            logger.info("job store", metadata: ["job_store": "\(url)", "job_store.instance": "\(store.instanceID)"])
            return store
        }
    }
}

/// Runs the stored jobs; on shutdown unfinished ones stay in the store for the next start.
struct JobRunnerService: Service {
    let runner: JobRunner

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await runner.run()
        }
        // Outside the cancelled task: the store refuses calls from one.
        await runner.handBack()
    }
}

/// Sends the webhooks of ended jobs (nothing without `WEBHOOK_SECRET`).
struct WebhookService: Service {
    let sender: WebhookSender?

    func run() async throws {
        guard let sender else { return try await gracefulShutdown() }
        await cancelWhenGracefulShutdown {
            await sender.run()
        }
    }
}

/// Removes final jobs older than `JOB_RETENTION`, and input images no call used since, at
/// start and every hour.
struct JobRetentionService: Service {
    let store: any JobStore
    let inputs: InputImages
    let retention: Duration
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let cutoff = Date().addingTimeInterval(-retention.seconds)
                    let removed = try await store.deleteFinished(before: cutoff)
                    if removed > 0 { logger.info("removed jobs past JOB_RETENTION", metadata: ["jobs.removed": "\(removed)"]) }
                    // A job still queued holds its inputs: only those older than every unfinished job
                    // go. A minute's margin: a file's time is the kernel's coarse clock, which may
                    // trail `Date()` by a few milliseconds.
                    let oldestUnfinished = try await store.oldestUnfinished().map { $0.addingTimeInterval(-60) } ?? cutoff
                    let images = await inputs.removeUnused(before: min(cutoff, oldestUnfinished))
                    if images > 0 { logger.info("removed input images past JOB_RETENTION", metadata: ["inputs.removed": "\(images)"]) }
                } catch {
                    logger.warning("job retention could not run", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: .seconds(3600))
            }
        }
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
