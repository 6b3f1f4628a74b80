import Foundation
import Comfy
import Logging

/// Everything the gateway process reads from its environment.
///
/// Variables: `COMFYUI_SERVER` (comma-separated `http://host:port` list, default
/// `http://127.0.0.1:8188`), `COMFYUI_INPUT_DIR` (ComfyUI's input folder, when this machine shares
/// it: images go straight into it in place of `POST /upload/image`), `FCGI_SOCKET` (default `RUN_DIR/fcgi.sock`), `FCGI_THREADS`
/// (default 256), `WORKFLOW_DIR` (`./workflow`), `OUTPUT_DIR` (`./output_images`),
/// `SERVER_BASE_URL` (absolute image URLs), `METRICS_TOKEN` (operators' Bearer token), `GENERATE_TIMEOUT` (600 s), `MAX_ABANDONED_JOBS_PER_CALLER` (64), `MAX_BODY_BYTES`
/// (`MAX_BODY`), `LOG_LEVEL` (info); for drawing sessions `WS_SOCKET` (`RUN_DIR/ws.sock`),
/// `SKETCH_TIMEOUT` (120 s), `SESSION_IDLE_TIMEOUT` (30 min), `SESSION_BLANK_GRACE` (60 s), `MAX_SKETCH_BYTES` (10 MiB),
/// `MAX_SKETCH_PIXELS` (16 Mpx), `WS_PING_INTERVAL` (20 s), `WS_RECEIVE_BUDGET` (256 MiB, or four
/// of the largest messages: bytes of messages received and not yet handled, all sockets together),
/// `WS_MESSAGE_TIMEOUT` (60 s for a message to arrive whole), `MAX_SESSIONS` (10,000),
/// `MAX_SESSIONS_PER_CLIENT` (100), `ALLOWED_ORIGINS` (other sites' pages
/// that may open drawing WebSockets; `*` for any); for browsers and workflows `CORS_ALLOW_ORIGINS`
/// (other sites' pages that may call the HTTP API), `ALLOWED_HOSTS` (names the API answers under
/// besides IP addresses, `localhost` and `SERVER_BASE_URL`'s host; `.example.com` for a domain,
/// `*` for any), `NODE_POLICY` (`deny`, the default, or
/// `allow`), `NODE_DENY` (classes denied besides the built-in list), `NODE_ALLOW` (the classes
/// `NODE_POLICY=allow` lets run), `WORKFLOW_MAX_PIXELS` (4096×4096), `WORKFLOW_MAX_BATCH` (64),
/// `WORKFLOW_MAX_STEPS` (150), `WORKFLOW_MAX_FRAMES` (257: what a caller may ask, `WorkflowLimits`); the backend pool
/// `BACKEND_CAPACITY` (2 prompts each), `MAX_QUEUED_JOBS` (500; beyond: 429),
/// `INTERACTIVE_FIRST` (true), `INTERACTIVE_BURST` (4), `JOB_MAX_ATTEMPTS` (3 backends), `BACKEND_FAILOVER_AFTER` (10 s),
/// `BACKEND_PROBE_INTERVAL` (5 s), `BACKEND_STALL_TIMEOUT` (180 s), `BACKEND_REST_COOLOFF` (30 s), `BACKEND_PING_INTERVAL` (15 s), `SHUTDOWN_DRAIN_TIMEOUT`
/// (120 s for in-flight requests after SIGTERM); image storage as
/// `StorageConfiguration` documents; input images of tool calls and `input_images`
/// `INPUT_MAX_BYTES` (`MAX_SKETCH_BYTES`), `INPUT_MAX_PIXELS` (`MAX_SKETCH_PIXELS`),
/// `DRAWING_AUTH` (false: the drawing API is public, limited per address by nginx),
/// `INPUT_URL_TIMEOUT` (20 s), `INPUT_URL_ALLOW_PRIVATE` (false: URLs on loopback, private and
/// link-local addresses are refused); jobs and webhooks as `JobConfiguration` documents; nginx's side as `SiteConfiguration` documents.
public struct GatewayConfiguration: Sendable {
    public var comfyServers: [ComfyServerURL]
    /// `COMFYUI_INPUT_DIR`: an existing folder, checked here; each backend checks it reads it.
    var comfyInputFolder: ComfyInputFolder?
    /// `COMFYUI_MAX_MESSAGE_BYTES`: the largest WebSocket message read from ComfyUI.
    var comfyMaxMessageBytes: Int
    /// `PNG_WORKFLOW_METADATA=keep`: result PNGs keep the graph ComfyUI wrote into them.
    var keepsWorkflowMetadata: Bool
    public var socketPath: String
    public var threads: Int
    var workflowDirectory: String
    var outputDirectory: String
    var serverBaseURL: String
    var generateTimeout: Duration
    var maxAbandonedJobsPerCaller: Int
    public var maxBodyBytes: Int
    public var logLevel: Logger.Level
    var storage: StorageConfiguration
    public var webSocketPath: String
    /// The nginx hosts that may connect to a TCP listener (`FCGI_WEB_SERVER_ADDRS`); `nil` on
    /// Unix sockets, where the socket file's permissions decide.
    public var listenerPeers: Set<String>?
    var sketchTimeout: Duration
    var sessionIdleTimeout: Duration
    var sessionBlankGrace: Duration
    var maxSketchBytes: Int
    var maxSketchPixels: Int
    var pingInterval: Duration
    /// Bytes of drawing-socket messages received and not yet handled, all sockets together.
    var webSocketReceiveBudget: Int
    /// How long a drawing-socket message may take to arrive whole.
    var webSocketMessageTimeout: Duration
    var maxSocketMessageBytes: Int { Self.maxSocketMessageBytes(sketchBytes: maxSketchBytes) }

    /// The largest drawing-socket message: a sketch in base64 (4/3 larger) and the JSON around it.
    static func maxSocketMessageBytes(sketchBytes: Int) -> Int { sketchBytes * 4 / 3 + 64 * 1024 }
    var maxSessions: Int
    var maxSessionsPerClient: Int
    /// What an input image may be, and how it is fetched.
    var inputLimits: InputImages.Limits
    /// Pages that may open drawing WebSockets.
    var drawingOrigins: OriginPolicy
    /// Pages that may call the HTTP API.
    var apiOrigins: OriginPolicy
    /// Names the HTTP API answers under.
    var hosts: HostPolicy
    /// What operators send besides coming from `METRICS_ALLOW` (`METRICS_TOKEN`), if anything.
    var operatorToken: OperatorToken?
    var nodePolicy: NodePolicy
    /// `WORKFLOW_MAX_PIXELS`, `WORKFLOW_MAX_BATCH`, `WORKFLOW_MAX_STEPS`, `WORKFLOW_MAX_FRAMES` (0: no limit).
    var workflowLimits: WorkflowLimits
    var scheduler: SchedulerConfiguration
    var backendTiming: BackendTiming
    public var drainTimeout: Duration
    /// nginx's side: port, run folder, TLS, body size.
    public var site: SiteConfiguration

    /// What callers' URLs (input images, webhooks) may never reach: the ComfyUI servers and this gateway's own port.
    var protectedEndpoints: ProtectedEndpoints
    /// The job store and webhooks.
    var jobs: JobConfiguration
    /// Whether the keyed endpoints need an API key (`AUTH`: `auto`, once a key exists; `required`; `off`).
    var authMode: APIKeyGate.Mode
    /// `DRAWING_AUTH`: the drawing API needs a key too, and its WebSocket a session token.
    var drawingAuth: Bool

    public init(_ environment: Environment) throws {
        let servers = (environment["COMFYUI_SERVER"] ?? "http://127.0.0.1:8188").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        comfyServers = try servers.map { text in
            guard let url = ComfyServerURL(text) else {
                throw ConfigurationError(variable: "COMFYUI_SERVER", problem: "\"\(text)\" is not an http://host:port URL")
            }
            return url
        }
        guard !comfyServers.isEmpty else { throw ConfigurationError(variable: "COMFYUI_SERVER", problem: "no server given") }
        // Two backends on one server would each take the other's prompts for strangers.
        var listed = Set<String>()
        for url in comfyServers where !listed.insert(url.description).inserted {
            throw ConfigurationError(variable: "COMFYUI_SERVER", problem: "\(url) is listed twice")
        }
        if let path = environment["COMFYUI_INPUT_DIR"], !path.isEmpty {
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue else {
                throw ConfigurationError(variable: "COMFYUI_INPUT_DIR", problem: "\(path) is not a folder (ComfyUI's input folder, as this machine sees it)")
            }
            comfyInputFolder = ComfyInputFolder(path: path)
        }
        comfyMaxMessageBytes = try environment.integer(
            "COMFYUI_MAX_MESSAGE_BYTES", default: ComfyConnection.defaultMaxMessageBytes, range: (64 << 10)...Int(UInt32.max)
        )
        switch environment["PNG_WORKFLOW_METADATA"] ?? "strip" {
        case "strip": keepsWorkflowMetadata = false
        case "keep": keepsWorkflowMetadata = true
        case let other: throw ConfigurationError(variable: "PNG_WORKFLOW_METADATA", problem: "expected strip or keep, got \"\(other.prefix(40))\"")
        }
        site = try SiteConfiguration(environment)
        socketPath = environment["FCGI_SOCKET"] ?? "\(site.runDirectory)/fcgi.sock"
        threads = try environment.integer("FCGI_THREADS", default: 256, range: 4...4096)
        workflowDirectory = environment["WORKFLOW_DIR"] ?? "./workflow"
        outputDirectory = environment["OUTPUT_DIR"] ?? "./output_images"
        serverBaseURL = environment["SERVER_BASE_URL"] ?? ""
        if !serverBaseURL.isEmpty, !(serverBaseURL.hasPrefix("http://") || serverBaseURL.hasPrefix("https://")) {
            throw ConfigurationError(variable: "SERVER_BASE_URL", problem: "expected an http:// or https:// URL, got \"\(serverBaseURL)\"")
        }
        generateTimeout = try environment.duration("GENERATE_TIMEOUT", default: .seconds(600))
        maxAbandonedJobsPerCaller = try environment.integer("MAX_ABANDONED_JOBS_PER_CALLER", default: 64, range: 0...100_000)
        // nginx refuses larger bodies first; the app's own limit defaults to the same size.
        maxBodyBytes = try environment.integer("MAX_BODY_BYTES", default: site.maxBodyBytes, range: 1024...(1 << 40))
        let level = environment["LOG_LEVEL"] ?? "info"
        guard let logLevel = Logger.Level(rawValue: level) else {
            throw ConfigurationError(variable: "LOG_LEVEL", problem: "expected trace, debug, info, notice, warning, error or critical, got \"\(level)\"")
        }
        self.logLevel = logLevel
        webSocketPath = environment["WS_SOCKET"] ?? "\(site.runDirectory)/ws.sock"
        try SiteConfiguration.checkQuotable(outputDirectory, variable: "OUTPUT_DIR")
        for (variable, path) in [("FCGI_SOCKET", socketPath), ("WS_SOCKET", webSocketPath)] {
            guard case .unix(let file) = ListenAddress(path) else { continue }
            let named = environment[variable] == nil ? "RUN_DIR" : variable
            try SiteConfiguration.checkQuotable(file, variable: named)
            // sockaddr_un holds 108 bytes with the terminating NUL.
            let length = SiteConfiguration.absolute(file).utf8.count
            guard length <= 107 else {
                throw ConfigurationError(variable: named, problem: "the socket \(SiteConfiguration.absolute(file)) is \(length) bytes long; a Unix socket's path takes at most 107 (choose a shorter folder)")
            }
        }
        // Both listeners believe what nginx says of the client (its address, Host, scheme): on
        // TCP, anyone else who reaches them could claim any address and pass every per-address limit.
        if ListenAddress(socketPath).isTCP || ListenAddress(webSocketPath).isTCP {
            let peers = environment.list("FCGI_WEB_SERVER_ADDRS")
            guard !peers.isEmpty else {
                throw ConfigurationError(
                    variable: "FCGI_WEB_SERVER_ADDRS",
                    problem: "FCGI_SOCKET or WS_SOCKET listens on TCP: list the nginx hosts' addresses that may connect (comma-separated)"
                )
            }
            listenerPeers = Set(peers)
        }
        sketchTimeout = try environment.duration("SKETCH_TIMEOUT", default: .seconds(120))
        sessionIdleTimeout = try environment.duration("SESSION_IDLE_TIMEOUT", default: .seconds(1800))
        sessionBlankGrace = try environment.duration("SESSION_BLANK_GRACE", default: .seconds(60))
        maxSketchBytes = try environment.integer("MAX_SKETCH_BYTES", default: 10 << 20, range: 1024...(256 << 20))
        maxSketchPixels = try environment.integer("MAX_SKETCH_PIXELS", default: 4096 * 4096, range: 64...(1 << 28))
        inputLimits = InputImages.Limits(
            maxBytes: try environment.integer("INPUT_MAX_BYTES", default: maxSketchBytes, range: 1024...(256 << 20)),
            maxPixels: try environment.integer("INPUT_MAX_PIXELS", default: maxSketchPixels, range: 64...(1 << 28)),
            fetchTimeout: try environment.duration("INPUT_URL_TIMEOUT", default: .seconds(20)),
            allowPrivate: try environment.boolean("INPUT_URL_ALLOW_PRIVATE", default: false)
        )
        protectedEndpoints = ProtectedEndpoints(backends: comfyServers, ownPort: site.port)
        inputLimits.protected = protectedEndpoints
        pingInterval = try environment.duration("WS_PING_INTERVAL", default: .seconds(20))
        webSocketMessageTimeout = try environment.duration("WS_MESSAGE_TIMEOUT", default: .seconds(60))
        // nginx ends a proxied WebSocket after 120 s without a frame (nginx/snippets/websocket-proxy.conf).
        guard pingInterval <= .seconds(60) else {
            throw ConfigurationError(variable: "WS_PING_INTERVAL", problem: "at most 60s: nginx closes a WebSocket that is silent for 120 s")
        }
        maxSessions = try environment.integer("MAX_SESSIONS", default: 10_000, range: 1...1_000_000)
        maxSessionsPerClient = try environment.integer("MAX_SESSIONS_PER_CLIENT", default: 100, range: 0...1_000_000)
        drawingOrigins = try environment.origins("ALLOWED_ORIGINS", publicBaseURL: serverBaseURL)
        apiOrigins = try environment.origins("CORS_ALLOW_ORIGINS", publicBaseURL: serverBaseURL)
        do {
            hosts = try HostPolicy(allowed: environment.list("ALLOWED_HOSTS"), api: apiOrigins)
        } catch {
            throw ConfigurationError(variable: "ALLOWED_HOSTS", problem: "\"\(error.text)\" is not a host name like gateway or img.example.com, or a domain like .example.com")
        }
        if let token = environment["METRICS_TOKEN"], !token.isEmpty {
            guard token.count >= OperatorToken.minimumLength, token.allSatisfy({ $0.isASCII && !$0.isWhitespace && !$0.isNewline }) else {
                throw ConfigurationError(
                    variable: "METRICS_TOKEN", problem: "expected at least \(OperatorToken.minimumLength) characters without spaces (openssl rand -hex 32 makes one)"
                )
            }
            operatorToken = OperatorToken(token)
        }
        nodePolicy = try environment.nodePolicy()
        let limits = WorkflowLimits()
        workflowLimits = WorkflowLimits(
            maxPixels: try environment.integer("WORKFLOW_MAX_PIXELS", default: limits.maxPixels, range: 0...(1 << 40)),
            maxBatch: try environment.integer("WORKFLOW_MAX_BATCH", default: limits.maxBatch, range: 0...100_000),
            maxSteps: try environment.integer("WORKFLOW_MAX_STEPS", default: limits.maxSteps, range: 0...1_000_000),
            maxFrames: try environment.integer("WORKFLOW_MAX_FRAMES", default: limits.maxFrames, range: 0...1_000_000)
        )
        storage = try StorageConfiguration(environment)
        scheduler = SchedulerConfiguration(
            capacityPerBackend: try environment.integer("BACKEND_CAPACITY", default: 2, range: 1...64),
            maxQueuedJobs: try environment.integer("MAX_QUEUED_JOBS", default: 500, range: 0...100_000),
            interactiveFirst: try environment.boolean("INTERACTIVE_FIRST", default: true),
            interactiveBurst: try environment.integer("INTERACTIVE_BURST", default: 4, range: 1...1000),
            maxAttempts: try environment.integer("JOB_MAX_ATTEMPTS", default: 3, range: 1...10)
        )
        drainTimeout = try environment.duration("SHUTDOWN_DRAIN_TIMEOUT", default: .seconds(120))
        jobs = try JobConfiguration(environment)
        let auth = environment["AUTH"] ?? "auto"
        guard let authMode = APIKeyGate.Mode(rawValue: auth) else {
            throw ConfigurationError(variable: "AUTH", problem: "expected auto, required or off, got \"\(auth)\"")
        }
        self.authMode = authMode
        drawingAuth = try environment.boolean("DRAWING_AUTH", default: false)
        if drawingAuth, authMode == .off {
            // Tokens without keys would be given to whoever names a session first: anyone.
            throw ConfigurationError(variable: "DRAWING_AUTH", problem: "true needs API keys, which AUTH=off turns off")
        }
        backendTiming = BackendTiming(
            failoverAfter: try environment.duration("BACKEND_FAILOVER_AFTER", default: .seconds(10)),
            probeInterval: try environment.duration("BACKEND_PROBE_INTERVAL", default: .seconds(5)),
            stallTimeout: try environment.duration("BACKEND_STALL_TIMEOUT", default: .seconds(180)),
            pingInterval: try environment.duration("BACKEND_PING_INTERVAL", default: .seconds(15)),
            restCooloff: try environment.duration("BACKEND_REST_COOLOFF", default: .seconds(30))
        )
        let largest = Self.maxSocketMessageBytes(sketchBytes: maxSketchBytes)
        webSocketReceiveBudget = try environment.integer("WS_RECEIVE_BUDGET", default: max(256 << 20, 4 * largest), range: largest...(1 << 40))
    }
}
