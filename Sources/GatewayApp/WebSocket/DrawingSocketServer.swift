import Comfy
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import ServiceLifecycle
import Synchronization

/// The streaming listener on a unix socket that nginx proxies to: the drawing API's WebSocket
/// side, `/api/ws/{session_id}`, and the jobs' event streams, `/api/jobs/{id}/events`.
final class DrawingSocketServer: Service {
    private let socketPath: String
    private let sessions: DrawingSessions
    private let jobEvents: JobEventStream
    private let limits: SketchLimits
    private let maxMessageBytes: Int
    private let receiveBudget: ReceiveBudget
    private let messageTimeout: TimeAmount
    private let pingInterval: TimeAmount
    private let origins: OriginPolicy
    /// The names a job's event stream is answered under, as the HTTP API's (`HostPolicy`).
    private let hosts: HostPolicy
    /// With `DRAWING_AUTH`: an upgrade needs the session's token in its query.
    private let tokens: SessionTokens?

    /// Why an upgrade was refused.
    enum Refusal: Sendable {
        case foreignOrigin
        case noToken
    }
    /// Whether a token's API key is still active.
    private let gate: APIKeyGate
    /// On TCP: the nginx hosts that may connect (`FCGI_WEB_SERVER_ADDRS`); anyone else is hung up on.
    private let peers: Set<String>?
    private let logger: Logger
    /// Makes the socket reachable by nginx's workers only (`NginxSite.grantSocket`).
    private let grantSocket: @Sendable (String) -> Void

    private enum Upgrade: Sendable {
        /// `keyName`: the API key the session's token was given to, if any.
        case websocket(
            NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, sessionID: String, clientAddress: String, keyName: String?, receiving: ReceiveBudget.Account
        )
        case refused(NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, reason: Refusal?)
    }

    /// - Parameter origins: the browser pages that may open a session's socket.
    init(
        socketPath: String, sessions: DrawingSessions, jobs: JobRunner, gate: APIKeyGate, limits: SketchLimits, maxMessageBytes: Int, receiveBudget: ReceiveBudget,
        messageTimeout: Duration, pingInterval: Duration,
        peers: Set<String>? = nil, origins: OriginPolicy, hosts: HostPolicy, tokens: SessionTokens? = nil, logger: Logger,
        grantSocket: @escaping @Sendable (String) -> Void
    ) {
        self.peers = peers
        self.hosts = hosts
        self.grantSocket = grantSocket
        self.origins = origins
        self.tokens = tokens
        self.gate = gate
        self.socketPath = socketPath
        self.sessions = sessions
        jobEvents = JobEventStream(runner: jobs, gate: gate, heartbeat: pingInterval)
        self.limits = limits
        self.maxMessageBytes = maxMessageBytes
        self.receiveBudget = receiveBudget
        self.messageTimeout = TimeAmount(messageTimeout)
        self.pingInterval = TimeAmount(pingInterval)
        self.logger = logger
    }

    /// The session id of an upgrade request's path, if it is a valid one.
    static func sessionID(of uri: String) -> String? {
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        guard path.hasPrefix("/api/ws/") else { return nil }
        let id = String(path.dropFirst("/api/ws/".count))
        return (try? DrawingError.checkSessionID(id)) != nil ? id : nil
    }

    /// The client's address: nginx appends it to `X-Forwarded-For` (earlier entries are the client's own claims).
    static func clientAddress(_ headers: HTTPHeaders) -> String {
        headers.first(name: "X-Forwarded-For")?.split(separator: ",").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    }

    /// Whether a browser page at the request's `Origin` may open the socket; clients that send
    /// no `Origin` (not browsers) may. This stops another site's page from driving a painter's
    /// session with their cookies and network.
    static func originAllowed(_ headers: HTTPHeaders, policy: OriginPolicy) -> Bool {
        guard let origin = headers.first(name: "Origin") else { return true }
        // nginx sets both (snippets/websocket-proxy.conf): the client's own Host, port included, and its scheme.
        return policy.allows(origin: origin, scheme: headers.first(name: "X-Forwarded-Proto") ?? "http", host: headers.first(name: "Host"))
    }

    func run() async throws {
        let (maxMessageBytes, receiveBudget, messageTimeout, pingInterval) = (self.maxMessageBytes, self.receiveBudget, self.messageTimeout, self.pingInterval)
        let gate = self.gate
        let origins = self.origins
        let (tokens, peers) = (self.tokens, self.peers)
        // Channels whose upgrade was refused for their Origin or token, from `shouldUpgrade` to the refusal.
        let refusals = Mutex([ObjectIdentifier: Refusal]())
        let address = ListenAddress(socketPath)
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).serverChannelOption(.backlog, value: 1024)
        let server = try await Self.bind(bootstrap, to: address) { channel in
                // Another peer than nginx is hung up on at once (nothing of it is read).
                if let peers, !peers.contains(channel.remoteAddress?.ipAddress ?? "") {
                    channel.close(promise: nil)
                    let never: EventLoopFuture<Upgrade> = channel.eventLoop.makeFailedFuture(ChannelError.inputClosed)
                    return channel.eventLoop.makeSucceededFuture(never)
                }
                return channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                        maxFrameSize: maxMessageBytes,
                        shouldUpgrade: { channel, head in
                            let sessionID = Self.sessionID(of: head.uri)
                            var refusal: Refusal?
                            if !Self.originAllowed(head.headers, policy: origins) {
                                refusal = .foreignOrigin
                            } else if let tokens, let sessionID, tokens.verify(SessionTokens.token(inURI: head.uri), for: sessionID) == nil {
                                refusal = .noToken
                            }
                            if let refusal { refusals.withLock { $0[ObjectIdentifier(channel)] = refusal } }
                            let acceptable = sessionID != nil && refusal == nil
                            // Whether the token's key is still active is asked once the socket is up (`DrawingSocketConnection`).
                            return channel.eventLoop.makeSucceededFuture(acceptable ? HTTPHeaders() : nil)
                        },
                        upgradePipelineHandler: { channel, head in
                            channel.eventLoop.makeCompletedFuture {
                                let clientAddress = Self.clientAddress(head.headers)
                                let receiving = ReceiveBudget.Account(budget: receiveBudget, address: clientAddress)
                                // Before the frame decoder, which keeps a partial frame (also the bytes the upgrade replays).
                                let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
                                try channel.pipeline.syncOperations.addHandler(ReceiveBudgetHandler(account: receiving, messageTimeout: messageTimeout), position: .before(decoder))
                                // A painter that answers neither the keep-alive's ping nor its own is gone.
                                try channel.pipeline.syncOperations.addHandler(WebSocketSilenceCheck(interval: pingInterval, masksPings: false), position: .before(decoder))
                                // Where every frame goes out, whoever writes it: one close frame, 1001 when we close first.
                                let encoder = try channel.pipeline.syncOperations.handler(type: WebSocketFrameEncoder.self)
                                try channel.pipeline.syncOperations.addHandler(WebSocketCloseOnce(), position: .after(encoder))
                                try channel.pipeline.syncOperations.addHandler(WebSocketFrameValidator(peerMasks: true))
                                try channel.pipeline.syncOperations.addHandler(NIOWebSocketFrameAggregator(
                                    minNonFinalFragmentSize: 0,
                                    maxAccumulatedFrameCount: 4096,
                                    maxAccumulatedFrameSize: maxMessageBytes
                                ))
                                let sessionID = Self.sessionID(of: head.uri) ?? ""
                                let keyName = tokens?.verify(SessionTokens.token(inURI: head.uri), for: sessionID)
                                try channel.pipeline.syncOperations.addHandler(WebSocketKeepAlive(
                                    interval: pingInterval,
                                    keyRevoked: Self.revocationCheck(keyName, gate: gate),
                                    revokedMessage: Self.revokedMessage
                                ))
                                // Whole messages wait for the reader at most two deep: reading stops past that.
                                let buffering = NIOAsyncChannel<WebSocketFrame, WebSocketFrame>.Configuration(
                                    backPressureStrategy: .init(lowWatermark: 1, highWatermark: 2)
                                )
                                return .websocket(
                                    try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: buffering), sessionID: sessionID,
                                    clientAddress: clientAddress, keyName: keyName, receiving: receiving
                                )
                            }
                        }
                    )
                    let configuration = NIOTypedHTTPServerUpgradeConfiguration<Upgrade>(
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            channel.eventLoop.makeCompletedFuture {
                                let reason = refusals.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
                                return .refused(try NIOAsyncChannel(wrappingChannelSynchronously: channel), reason: reason)
                            }
                        }
                    )
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: .init(upgradeConfiguration: configuration))
                }
            }
        // nginx's workers run as this user; nobody else may connect (as for the FastCGI socket).
        if !address.isTCP { grantSocket(socketPath) }
        logger.info("drawing WebSocket listening", metadata: ["ws.socket": "\(socketPath)"])
        let (closed, closing) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await Self.returnMemory(after: closed) }
                if tokens != nil { group.addTask { await self.keepKeysRead() } }
                try? await server.executeThenClose { inbound in
                    for try await upgrade in inbound {
                        group.addTask {
                            await self.handle(upgrade)
                            closing.yield()
                        }
                    }
                }
                closing.finish()
                // The listener ended: so do the memory and key rounds, and the sockets still open.
                group.cancelAll()
            }
        }
        if !address.isTCP { unlink(socketPath) }
    }

    /// Listens on the Unix socket, or on TCP when nginx runs on another machine.
    private static func bind<Output: Sendable>(
        _ bootstrap: ServerBootstrap, to address: ListenAddress, childChannelInitializer: @escaping @Sendable (Channel) -> EventLoopFuture<Output>
    ) async throws -> NIOAsyncChannel<Output, Never> {
        switch address {
        case .unix(let path):
            try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true, childChannelInitializer: childChannelInitializer)
        case .tcp(let host, let port):
            try await bootstrap.bind(host: host, port: port, childChannelInitializer: childChannelInitializer)
        }
    }

    /// Gives freed memory back to the system a second after a socket closes and again ten seconds
    /// later; closes during a round wait for the next. glibc keeps what thousands of closed
    /// painters' connections freed otherwise (measured: none of 262 MB came back after 10,000
    /// sockets closed), and some of it is freed only after the first trim (50 MB more came back).
    private static func returnMemory(after closes: AsyncStream<Void>) async {
        for await _ in closes {
            for pause in [Duration.seconds(1), .seconds(10)] {
                try? await Task.sleep(for: pause)
                _ = malloc_trim(0)
            }
        }
    }

    /// With session tokens, has the gate read the keys each second: the sockets' keep-alive
    /// ticks, on event loops, check the last list read (`APIKeyGate.wasRevoked`).
    private func keepKeysRead() async {
        while (try? await Task.sleep(for: .seconds(1))) != nil {
            await gate.readKeys()
        }
    }

    /// A keyed socket's check at each keep-alive tick; `nil` for a socket without a key.
    private static func revocationCheck(_ keyName: String?, gate: APIKeyGate) -> (@Sendable () -> Bool)? {
        guard let keyName else { return nil }
        return { gate.wasRevoked(name: keyName) }
    }

    /// What a socket whose key was revoked hears before it closes.
    static let revokedMessage = String(decoding: SessionMessage.error(message: APIError.revokedSessionKey.message).json.encoded(), as: UTF8.self)

    private func handle(_ upgrade: EventLoopFuture<Upgrade>) async {
        switch try? await upgrade.get() {
        case .websocket(let channel, let sessionID, let clientAddress, let keyName, let receiving):
            await DrawingSocketConnection(
                sessionID: sessionID, clientAddress: clientAddress, keyName: keyName, gate: gate, sessions: sessions, limits: limits,
                receiving: receiving, logger: logger
            ).serve(channel)
            // The channel is closed: what its reader left unhandled is free.
            receiving.close()
        case .refused(let channel, let reason):
            await answer(channel, refusal: reason)
        case nil:
            break
        }
    }

    /// Answers a request that is not a WebSocket upgrade: a job's event stream, else a JSON error.
    private func answer(_ channel: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, refusal: Refusal?) async {
        let (jobEvents, hosts) = (self.jobEvents, self.hosts)
        try? await channel.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            for try await part in inbound {
                if case .head(let requestHead) = part { head = requestHead }
                guard case .end = part else { continue }
                if let head, head.method == .GET, let id = JobEventStream.jobID(of: head.uri) {
                    guard hosts.allows(host: head.headers.first(name: "Host")) else {
                        try await outbound.writeJSONError(APIError.unknownHost(head.headers.first(name: "Host")))
                        return
                    }
                    try await jobEvents.serve(id, authorization: head.headers.first(name: "Authorization"), to: outbound)
                    return
                }
                let error = switch refusal {
                case .foreignOrigin?: APIError(.forbidden, "WebSocket connections from this page's origin are not allowed (ALLOWED_ORIGINS, SERVER_BASE_URL)")
                case .noToken?: APIError(.unauthorized, "this session's WebSocket needs its session_token (DRAWING_AUTH): use the websocket_url /api/sketch answered")
                case nil: APIError(.invalidRequest, "connect with a WebSocket upgrade to /api/ws/{session_id}; session ids are 1 to 64 letters, digits, '-' or '_'")
                }
                try await outbound.writeJSONError(error)
                return
            }
        }
    }
}

/// glibc's `int malloc_trim(size_t pad)`: `malloc.h` is not part of Swift's Glibc module.
@_silgen_name("malloc_trim")
private func malloc_trim(_ pad: Int) -> Int32
