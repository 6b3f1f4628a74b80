import Foundation
import Logging

/// Every painter's session: turns sketches into generations, latest sketch first, and tells
/// the session's WebSockets how each one goes.
public actor DrawingSessions {
    /// Changed only through `add` and `drop`, which keep `openedBy` in step.
    private var sessions: [String: SketchSession] = [:]
    /// Sessions open by client address (`SketchSession.client`).
    private var openedBy: [String: Int] = [:]
    /// The sketch file each session writes, by `SketchSession.sketchSlot`.
    private var sketchSlots: SketchSlots
    private let pool: BackendPool
    private let styles: StyleLibrary
    private let store: any ImageStore
    private let configuration: Configuration
    private let logger: Logger
    /// Where sessions outlive this instance (a shared job store); `nil` keeps them in memory only.
    private let persistence: (any DrawingSessionStore)?
    /// Generations to start; `run()` owns their tasks.
    private let generations: AsyncStream<(update: SketchUpdate, session: String)>.Continuation
    private let generationStream: AsyncStream<(update: SketchUpdate, session: String)>

    /// Limits and timing of drawing sessions.
    public struct Configuration: Sendable {
        /// One generation, including a retry after a lost backend.
        public var jobTimeout: Duration
        /// A session without sockets, jobs or sketches for this long is dropped.
        public var idleTimeout: Duration
        /// ComfyUI's input subfolder for sketches (one file per open session, overwritten; `SketchSlots`).
        public var uploadSubfolder: String
        /// Sessions open at once at most.
        public var maxSessions: Int
        /// Sessions one client address may have open at once (0: no limit): else one address
        /// could fill `maxSessions` and lock every other painter out for the idle timeout.
        public var maxSessionsPerClient: Int
        /// Sets this instance's sketch file names apart (`SketchFilePrefix`).
        public var sketchFilePrefix: String
        /// A session whose sockets sent nothing for this long since it opened makes way for a
        /// new one when `maxSessions` are open: sockets alone would hold every place.
        public var blankGrace: Duration

        public init(
            jobTimeout: Duration = .seconds(120), idleTimeout: Duration = .seconds(1800), uploadSubfolder: String = "gateway", maxSessions: Int = 10_000,
            maxSessionsPerClient: Int = 100, sketchFilePrefix: String = SketchFilePrefix.fresh(), blankGrace: Duration = .seconds(60)
        ) {
            self.blankGrace = blankGrace
            self.sketchFilePrefix = sketchFilePrefix
            self.maxSessions = maxSessions
            self.maxSessionsPerClient = maxSessionsPerClient
            self.jobTimeout = jobTimeout
            self.idleTimeout = idleTimeout
            self.uploadSubfolder = uploadSubfolder
        }
    }

    public init(
        pool: BackendPool, styles: StyleLibrary, store: any ImageStore, configuration: Configuration, persistence: (any DrawingSessionStore)? = nil,
        logger: Logger
    ) {
        self.persistence = persistence
        self.pool = pool
        self.styles = styles
        self.store = store
        self.configuration = configuration
        self.logger = logger
        sketchSlots = SketchSlots(prefix: configuration.sketchFilePrefix)
        (generationStream, generations) = AsyncStream.makeStream()
    }

    /// Runs the sessions' generations until cancelled; each in a child task of this one.
    public func run() async {
        // Prompts of this prefix that a crashed run of the gateway left queued on ComfyUI: their
        // painters' sockets are gone, and their file names are handed to new sessions now.
        let (prefix, subfolder) = (sketchSlots.prefix, configuration.uploadSubfolder)
        for backend in pool.backends {
            await backend.clearLeftovers { entry in
                entry.hasInput { SketchSlots.isSketchFile($0, prefix: prefix, subfolder: subfolder) }
            }
        }
        await withDiscardingTaskGroup { group in
            for await next in generationStream {
                group.addTask { await self.generate(next.update, in: next.session) }
            }
        }
    }

    /// How many sessions exist.
    public var count: Int { sessions.count }

    /// The longest `prompt` a session takes.
    public static let maxPromptCharacters = 4000

    /// A new session only while there is room, in all and for its client: each may hold
    /// sketches and a result.
    private func checkRoom(for id: String, client: String) throws(DrawingError) {
        guard sessions[id] == nil else { return }
        let perClient = configuration.maxSessionsPerClient
        func clientIsFull() -> Bool { perClient > 0 && !client.isEmpty && openedBy[client, default: 0] >= perClient }
        guard sessions.count >= configuration.maxSessions || clientIsFull() else { return }
        sweepIdle()
        // First: a client refused for its own count must not make another painter's session go.
        if clientIsFull() {
            throw DrawingError(.busy, "\(perClient) drawing sessions are open from your address; close one or let it go idle")
        }
        if sessions.count >= configuration.maxSessions, !makeWayForNewSession() {
            throw DrawingError(.busy, "the service is busy: \(configuration.maxSessions) drawing sessions are open; try again shortly")
        }
    }

    /// Drops the oldest session that holds nothing although it opened `blankGrace` ago: one
    /// kept by sockets alone (a socket may open a session, as the original API lets clients
    /// choose their ids). Its painters hear why. Returns whether one was dropped.
    private func makeWayForNewSession(now: ContinuousClock.Instant = .now) -> Bool {
        let grace = configuration.blankGrace
        guard let oldest = sessions.values.filter({ $0.holdsNothing && now - $0.opened >= grace }).min(by: { $0.opened < $1.opened }) else {
            return false
        }
        oldest.broadcaster.send(.error(message: "this drawing session was closed to make room: it took no sketch since it opened; connect again to draw"))
        drop(oldest.id)
        logger.info("a blank drawing session made way for a new one", metadata: ["sessions.open": "\(sessions.count)"])
        return true
    }

    /// Makes sure the session exists: as it was, as another instance saved it, or new while
    /// there is room.
    private func open(_ id: String, client address: String) async throws(DrawingError) {
        // An IPv6 client counts by its /64, whose addresses it can take in turn.
        let client = AddressShare.name(of: address)
        try checkRoom(for: id, client: client)
        await restoreIfNew(id, client: client)
        guard sessions[id] == nil else { return }
        // Again with no suspension before it is added: calls at once all passed the first check.
        try checkRoom(for: id, client: client)
        add(SketchSession(id: id, client: client, seed: Self.randomSeed(), now: .now, sketchSlot: sketchSlots.take()))
    }

    /// Makes the session `owner`'s (an API key's, `DRAWING_AUTH`) if it is nobody's yet, and
    /// refuses another key, which could otherwise take over its sketches, socket and results.
    /// Returns whether it became `owner`'s now (to be saved for the other instances).
    private func claim(_ id: String, for owner: String?) throws(DrawingError) -> Bool {
        guard let owner else { return false }
        switch sessions[id]?.owner {
        case owner?:
            return false
        case nil:
            sessions[id]?.owner = owner
            return true
        case _?:
            throw DrawingError(.notYours, "session \(id) belongs to another API key; start a session of your own")
        }
    }

    private func add(_ session: SketchSession) {
        sessions[session.id] = session
        if !session.client.isEmpty { openedBy[session.client, default: 0] += 1 }
    }

    private func drop(_ id: String) {
        guard let session = sessions.removeValue(forKey: id) else { return }
        session.broadcaster.finishAll()
        sketchSlots.giveBack(session.sketchSlot)
        guard !session.client.isEmpty else { return }
        openedBy[session.client, default: 1] -= 1
        if openedBy[session.client] == 0 { openedBy[session.client] = nil }
    }

    /// Takes a sketch for the session (created if new); its generation starts now or after the running one.
    public func submit(_ update: SketchUpdate, to id: String) async throws(DrawingError) {
        try DrawingError.checkSessionID(id)
        // Counted in code points: a Character may hold any number of combining marks ("e" and
        // 200,000 of U+0301 is one), and the whole prompt stays with the session and its prompts.
        if let prompt = update.prompt, prompt.unicodeScalars.count > Self.maxPromptCharacters {
            throw DrawingError(.invalidRequest, "the prompt is longer than \(Self.maxPromptCharacters) characters")
        }
        if let style = update.style, !StyleWorkflow.isValidName(style) {
            throw DrawingError(.unknownStyle, "style names are letters, digits, '-' and '_'")
        }
        if let style = update.style, await styles.style(style) == nil {
            throw DrawingError(.unknownStyle, "unknown style \"\(style.prefix(64))\"; GET /api/styles lists them")
        }
        try await open(id, client: update.clientAddress)
        let claimed = try claim(id, for: update.owner)
        guard var session = sessions[id] else { return }
        if let style = update.style { session.style = style }
        if let prompt = update.prompt { session.prompt = prompt.isEmpty ? nil : prompt }
        session.lastActivity = .now
        let action = session.submit(update)
        sessions[id] = session
        if action == .start { start(update, in: id) }
        // The other instances learn whose it is before any result of it.
        if claimed { await save(id) }
    }

    /// Opens a subscription for a WebSocket from `client` (its address); the session is created
    /// if new. `owner`: the API key the socket's session token was given to (`DRAWING_AUTH`): a
    /// session without one becomes that key's (it may be new, or made again after a restart),
    /// and another key's session is refused.
    public func subscribe(_ id: String, client: String = "", owner: String? = nil) async throws(DrawingError) -> (
        token: UInt64, messages: SessionMessages
    ) {
        try DrawingError.checkSessionID(id)
        try await open(id, client: client)
        if try claim(id, for: owner) { await save(id) }
        sessions[id]?.lastActivity = .now
        guard let session = sessions[id] else { throw DrawingError(.busy, "session \(id) was dropped meanwhile; connect again") }
        return session.broadcaster.add()
    }

    /// A socket closed. A session left blank goes at once: sockets opened and closed under
    /// fresh ids would otherwise fill `MAX_SESSIONS` for the idle timeout (30 minutes), and
    /// refuse every new painter meanwhile.
    public func unsubscribe(_ id: String, token: UInt64) {
        // A socket of a dropped session: another session may have this id by now.
        guard let session = sessions[id], session.broadcaster.remove(token) else { return }
        if session.isBlank {
            drop(id)
        } else {
            sessions[id]?.lastActivity = .now
        }
    }

    public func setPreviews(_ id: String, token: UInt64, enabled: Bool) {
        sessions[id]?.broadcaster.setPreviews(token, enabled: enabled)
    }

    /// Rolls a new sampler seed: the next generation may look different. Not saved for the
    /// other instances now (a socket could send it in a loop, a database write each); the next
    /// result saves it.
    public func rollSeed(_ id: String) {
        sessions[id]?.seed = Self.randomSeed()
    }

    /// A session this instance does not have, as another one saved it (its instance died).
    private func restoreIfNew(_ id: String, client: String) async {
        guard sessions[id] == nil, let persistence, let state = await persistence.drawingSession(id), sessions[id] == nil else { return }
        var session = SketchSession(id: id, client: client, seed: state.seed, now: .now, sketchSlot: sketchSlots.take())
        session.style = state.style
        session.prompt = state.prompt
        session.latestResult = state.latestResult
        session.owner = state.owner
        add(session)
    }

    private func save(_ id: String) async {
        guard let persistence, let session = sessions[id] else { return }
        await persistence.saveDrawingSession(
            id, DrawingSessionState(seed: session.seed, style: session.style, prompt: session.prompt, latestResult: session.latestResult, owner: session.owner)
        )
    }

    /// The file names of every session's latest result (retention keeps them), also those of
    /// the other instances' sessions on a shared store, which may share `OUTPUT_DIR`.
    public func resultFilenames() async throws -> Set<String> {
        let here = Set(sessions.values.compactMap { $0.latestResult?.filename })
        guard let persistence else { return here }
        return here.union(try await persistence.drawingResultFilenames())
    }

    /// The latest finished image of the session, also one another instance made. `owner`: the
    /// API key asking (`DRAWING_AUTH`); another key's session is refused, also when it took
    /// over the id after the asker's session was dropped.
    public func latestResult(_ id: String, owner: String? = nil) async throws(DrawingError) -> StoredImage? {
        let state: (owner: String?, result: StoredImage?)? = if let session = sessions[id] {
            (session.owner, session.latestResult)
        } else {
            await persistence?.drawingSession(id).map { ($0.owner, $0.latestResult) }
        }
        guard let state else { return nil }
        if let owner, let holder = state.owner, holder != owner {
            throw DrawingError(.notYours, "session \(id) belongs to another API key")
        }
        return state.result
    }

    /// Drops sessions idle for longer than the idle timeout; returns their ids.
    @discardableResult
    public func sweepIdle(now: ContinuousClock.Instant = .now) -> [String] {
        let expired = sessions.values.filter { $0.isIdle && now - $0.lastActivity > configuration.idleTimeout }.map(\.id)
        for id in expired { drop(id) }
        if !expired.isEmpty { logger.info("idle drawing sessions dropped", metadata: ["sessions.dropped": "\(expired.count)"]) }
        return expired
    }

    // MARK: Running generations

    private func start(_ update: SketchUpdate, in id: String) {
        generations.yield((update, id))
    }

    private func generate(_ update: SketchUpdate, in id: String) async {
        guard let session = sessions[id] else { return }
        let broadcaster = session.broadcaster
        broadcaster.send(.processing(progress: 0))
        do {
            let styleName = session.style
            let chosen: StyleWorkflow? = if let styleName { await styles.style(styleName) } else { await styles.defaultStyle() }
            guard let style = chosen else {
                throw DrawingError(.noStyles, styleName.map { "style \"\($0)\" is gone" } ?? "no styles are installed in WORKFLOW_DIR")
            }
            let upload = PromptUpload(
                subfolder: configuration.uploadSubfolder,
                filename: sketchSlots.filename(session.sketchSlot, mimeType: update.mimeType),
                bytes: update.image,
                mimeType: update.mimeType
            )
            let (events, continuation) = AsyncStream.makeStream(of: JobEvent.self)
            var job = PromptJob(
                workflow: style.patched(sketchImage: upload.loadImageName, seed: session.seed, prompt: session.prompt),
                outputNodeID: nil,
                timeout: configuration.jobTimeout,
                uploads: [upload],
                events: continuation
            )
            job.endsWithProcess = true
            // Painters take turns by API key where sessions belong to keys, else by address: an
            // IPv6 address's /64, as for the other limits per client (one painter has them all).
            let owner = session.owner.map { "key:\($0)" }
                ?? (update.clientAddress.isEmpty ? "session:\(id)" : "address:\(AddressShare.name(of: update.clientAddress))")
            async let result = pool.run(job, priority: .interactive, owner: owner)
            // Ends when the job does: the pool finishes the stream.
            for await event in events {
                switch event {
                case .progress(let progress): broadcaster.send(.processing(progress: progress))
                case .preview(let bytes, let mimeType): broadcaster.send(.preview(mimeType: mimeType, bytes: bytes))
                case .executionStarted: break
                }
            }
            let image = try await result
            let stored = try await store.store(image.bytes, mimeType: image.mimeType)
            sessions[id]?.latestResult = stored
            await save(id)
            broadcaster.send(.completed(resultURL: "/api/result/\(id)", imageURL: stored.url))
        } catch {
            logger.warning("drawing generation failed", metadata: ["session.id": "\(id)", "error": "\(error)"])
            broadcaster.send(.error(message: Self.message(for: error)))
        }
        sessions[id]?.lastActivity = .now
        if let next = sessions[id]?.finish() {
            start(next, in: id)
        }
    }

    private static func message(for error: Error) -> String {
        switch error {
        case let error as ComfyError: error.callerMessage
        case let error as DrawingError: error.message
        // The store's own words name buckets, keys and its answer: the log has them.
        case is StorageError: "storing the image failed"
        default: "generation failed"
        }
    }

    private static func randomSeed() -> UInt64 {
        // ComfyUI seeds go up to 2^64-1, but JSON numbers are doubles: stay exact.
        UInt64.random(in: 0..<(1 << 53))
    }
}
