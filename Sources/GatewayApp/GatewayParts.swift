import Comfy
import Foundation
import Logging
import Prometheus

/// The gateway's working parts (backends, storage, styles, drawing sessions) and the router
/// over them: what the application runs and what route tests call in-process.
struct GatewayParts: Sendable {
    let pool: BackendPool
    let store: any ImageStore
    let styles: StyleLibrary
    let sessions: DrawingSessions
    let limits: SketchLimits
    let metrics: PrometheusCollectorRegistry
    let local: LocalImageStore
    let jobs: JobRunner
    /// `nil` without `WEBHOOK_SECRET`.
    let webhooks: WebhookSender?
    let webhookKeyring: WebhookKeyring?
    /// Who may call the keyed endpoints.
    let gate: APIKeyGate
    /// Input images of calls, kept under `STATE_DIR/inputs`.
    let inputs: InputImages
    /// Drawing sessions' tokens; `nil` unless `DRAWING_AUTH`.
    let sessionTokens: SessionTokens?

    init(
        configuration: GatewayConfiguration, http: CurlHTTPClient, outbound: CurlHTTPClient? = nil, webhookHTTP: CurlHTTPClient? = nil, jobStore: any JobStore,
        metrics: PrometheusCollectorRegistry, logger: Logger
    ) throws {
        // This STATE_DIR's own: its sketch file names, and the mark on prompts that end with the process.
        let processMark = SketchFilePrefix.claim(in: configuration.jobs.stateDirectory)
        pool = BackendPool(
            urls: configuration.comfyServers, http: http, configuration: configuration.scheduler, timing: configuration.backendTiming,
            ledger: jobStore as? any SharedJobStore, board: jobStore as? any BackendHealthBoard, inputFolder: configuration.comfyInputFolder,
            maxMessageBytes: configuration.comfyMaxMessageBytes, leftoverMark: processMark,
            keepsWorkflowMetadata: configuration.keepsWorkflowMetadata, logger: logger
        )
        do {
            try FileManager.default.createDirectory(atPath: configuration.outputDirectory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError(variable: "OUTPUT_DIR", problem: "cannot create \(configuration.outputDirectory): \(error.localizedDescription)")
        }
        local = LocalImageStore(directory: configuration.outputDirectory, baseURL: configuration.serverBaseURL)
        store = try configuration.storage.makeStore(local: local, http: http, logger: logger)
        webhookKeyring = try configuration.jobs.webhookKeyring(store: jobStore)
        let webhooks = webhookKeyring.map { keyring in
            WebhookSender(
                store: jobStore, http: webhookHTTP ?? http,
                configuration: .init(
                    keyring: keyring, maxAttempts: configuration.jobs.webhookMaxAttempts, retryBase: configuration.jobs.webhookRetryBase,
                    timeout: configuration.jobs.webhookTimeout, allowPrivate: configuration.jobs.webhookAllowPrivate,
                    protected: configuration.protectedEndpoints
                ),
                logger: logger
            )
        }
        self.webhooks = webhooks
        gate = APIKeyGate(store: jobStore, mode: configuration.authMode)
        let inputDirectory = "\(configuration.jobs.stateDirectory)/inputs"
        do {
            try FileManager.default.createDirectory(atPath: inputDirectory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError(variable: "STATE_DIR", problem: "cannot create \(inputDirectory): \(error.localizedDescription)")
        }
        // Callers' URLs are fetched on a client of their own: a slow server holds none of the threads ComfyUI calls need.
        let secrets = jobStore as? any SharedSecrets
        sessionTokens = configuration.drawingAuth ? try SessionTokens.load(stateDirectory: configuration.jobs.stateDirectory, shared: secrets) : nil
        // Shared, the same image gets the same name on every instance.
        let namingKey = try StateSecret.load("input-names", stateDirectory: configuration.jobs.stateDirectory, shared: secrets)
        inputs = InputImages(
            directory: inputDirectory, http: outbound ?? http, limits: configuration.inputLimits, folder: configuration.nodePolicy.uploadFolder,
            namingKey: namingKey, shared: jobStore as? any SharedInputStore, comfyInputFolder: configuration.comfyInputFolder
        )
        let scheduler = configuration.scheduler
        jobs = JobRunner(
            store: jobStore, pool: pool, images: store, inputs: inputs,
            configuration: .init(
                timeout: configuration.generateTimeout,
                // Enough to keep every backend busy with a short queue behind; the rest wait in the store.
                maxRunningAsync: max(1, min(scheduler.capacityPerBackend * configuration.comfyServers.count * 2, max(1, scheduler.maxQueuedJobs / 2))),
                maxAbandonedPerOwner: configuration.maxAbandonedJobsPerCaller,
                maxWaiting: configuration.jobs.maxWaiting,
                crashLimit: configuration.jobs.crashLimit,
                queueTimeout: configuration.jobs.queueTimeout
            ),
            describe: { apiError(for: $0).jobFailure },
            webhookDue: { webhooks?.nudge() },
            maxRunning: { name in try? await jobStore.keys().first { $0.name == name }?.maxRunning },
            logger: logger
        )
        styles = StyleLibrary(directory: configuration.workflowDirectory, policy: configuration.nodePolicy, logger: logger)
        sessions = DrawingSessions(
            pool: pool,
            styles: styles,
            store: store,
            configuration: .init(
                jobTimeout: configuration.sketchTimeout, idleTimeout: configuration.sessionIdleTimeout, maxSessions: configuration.maxSessions,
                maxSessionsPerClient: configuration.maxSessionsPerClient,
                sketchFilePrefix: processMark, blankGrace: configuration.sessionBlankGrace
            ),
            persistence: jobStore as? any DrawingSessionStore,
            logger: logger
        )
        limits = SketchLimits(maxBytes: configuration.maxSketchBytes, maxPixels: configuration.maxSketchPixels)
        self.metrics = metrics
    }

    /// Every HTTP endpoint the app answers (nginx serves the static ones itself).
    func router(_ configuration: GatewayConfiguration) -> Router {
        var router = Router(
            crossOrigin: CrossOriginPolicy(origins: configuration.apiOrigins), hosts: configuration.hosts, gate: gate, operatorToken: configuration.operatorToken
        )
        // Keep FastCGI threads for everything else while generate calls wait on the GPUs, and
        // while job submissions wait on their input images' servers (one that trickles its answer
        // holds a thread for INPUT_URL_TIMEOUT).
        let generateLimit = ConcurrencyLimit(max(1, configuration.threads - max(8, configuration.threads / 8)))
        let admission = JobAdmission(
            gate: gate, store: jobs.store, runner: jobs, policy: configuration.nodePolicy, limits: configuration.workflowLimits, inputs: inputs, pool: pool,
            idempotencyWindow: jobs.configuration.idempotencyWindow
        )
        let generate = GenerateRoute(runner: jobs, local: local, limit: generateLimit, admission: admission)
        router.add("POST", "/api/generate", body: .jsonOrMultipart, keyed: true) { try await generate.generate($0, forceFile: false) }
        router.add("POST", "/api/generate_file", body: .jsonOrMultipart, keyed: true) { try await generate.generate($0, forceFile: true) }
        let jobsRoute = JobsRoute(
            runner: jobs, admission: admission, webhooks: configuration.jobs, protected: configuration.protectedEndpoints, limit: generateLimit
        )
        router.add("POST", "/api/jobs", body: .jsonOrMultipart, keyed: true) { try await jobsRoute.submit($0) }
        router.add("GET", "/api/jobs", keyed: true) { try await jobsRoute.list($0) }
        router.add("GET", prefix: "/api/jobs/", keyed: true) { try await jobsRoute.show($0) }
        router.add("DELETE", prefix: "/api/jobs/", keyed: true) { try await jobsRoute.cancel($0) }
        let workflows = WorkflowsRoute(library: styles, generate: generate, jobs: jobsRoute)
        let openAPI = OpenAPIRoute(staticDirectory: configuration.site.staticDirectory, library: styles, serverBaseURL: configuration.serverBaseURL, gate: gate)
        router.add("GET", "/api/workflows", keyed: true) { await workflows.list($0) }
        // Public like /openapi.json: Dify's import-from-URL fetch carries no credentials.
        router.add("GET", "/api/workflows/openapi.json") { await openAPI.toolDocument($0) }
        router.add("GET", prefix: "/api/workflows/", keyed: true) { try await workflows.show($0) }
        router.add("POST", prefix: "/api/workflows/", suffix: "/run", body: .json, keyed: true) { try await workflows.run($0) }
        router.add("GET", "/openapi.json") { await openAPI.document($0) }
        let usage = UsageRoute(store: jobs.store)
        router.add("GET", "/api/usage", keyed: true) { try await usage.usage($0) }
        let webhookSecret = WebhookSecretRoute(keyring: webhookKeyring)
        router.add("GET", "/api/webhook_secret", keyed: true) { try webhookSecret.secret($0) }
        let bucketStore = if case .local = configuration.storage.backend { false } else { true }
        let sketch = SketchRoute(
            sessions: sessions, styles: styles, limits: limits, tokens: sessionTokens, gate: gate, outputDirectory: configuration.outputDirectory,
            bucketStore: bucketStore
        )
        router.add("GET", "/api/styles") { await sketch.listStyles($0) }
        router.add("POST", "/api/sketch", body: .multipart, keyed: sessionTokens != nil) { try await sketch.upload($0) }
        router.add("GET", prefix: "/api/result/") { try await sketch.result($0) }
        let stats = JobStoreStats(store: jobs.store)
        let health = HealthRoute(pool: pool, styles: styles, jobs: stats)
        router.add("GET", "/healthz", anyHost: true) { await health.health($0) }
        let metricsRoute = MetricsRoute(registry: metrics, sessions: sessions, pool: pool, jobs: stats)
        router.add("GET", "/metrics") { await metricsRoute.metrics($0) }
        return router
    }
}
