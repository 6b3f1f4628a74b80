import Foundation
import Logging

/// One ComfyUI server: its long-lived WebSocket, the prompts in flight on it, and its REST calls.
///
/// Events on the socket are routed to prompts by `prompt_id`. The socket is opened with a fresh
/// `clientId` on every (re)connection: ComfyUI keeps one socket per id, and an old socket's
/// cleanup would silently orphan a new one with the same id (protocol notes §5b).
public actor ComfyBackend {
    /// Where the server is.
    public nonisolated let url: ComfyServerURL
    let http: CurlHTTPClient
    let logger: Logger
    private let clientIDPrefix = UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
    private var generation = 0
    let timing: BackendTiming

    /// The id of the current socket; prompts are submitted under it.
    private(set) var clientID: String?
    private(set) var slots: [String: WatchSlot] = [:] {
        didSet { if oldValue.count != slots.count { monitor.promptsInFlight(slots.count, at: .now) } }
    }
    /// The prompt ComfyUI is running for us, to attribute frames that carry no prompt id.
    private var runningPromptID: String?
    private var connectedWaiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    /// Why the backend last failed, for `/healthz`.
    public internal(set) var lastError: String?
    public var isConnected: Bool { monitor.isConnected }

    /// The health rules (see ComfyBackend+Health).
    var monitor: BackendHealthMonitor
    var publishedHealth = BackendHealth.down
    let healthContinuation: AsyncStream<BackendHealth>.Continuation
    /// Every change of `health`, for the scheduler.
    public nonisolated let healthChanges: AsyncStream<BackendHealth>

    struct WatchSlot {
        var watch: PromptWatch
        /// The client id the prompt was submitted under.
        var clientID: String
        var waiter: CheckedContinuation<PromptWatch, Error>?
    }

    public init(url: ComfyServerURL, http: CurlHTTPClient, timing: BackendTiming = BackendTiming(), logger: Logger) {
        self.url = url
        self.http = http
        self.timing = timing
        monitor = BackendHealthMonitor(timing: timing, now: .now)
        (healthChanges, healthContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        var logger = logger
        logger[metadataKey: "comfy.backend"] = "\(url)"
        self.logger = logger
    }

    /// How many prompts this gateway has in flight here.
    public var inFlight: Int { slots.count }

    /// Keeps the WebSocket open until the task is cancelled, reconnecting with backoff.
    public func run() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            generation += 1
            let id = "\(clientIDPrefix)-\(generation)"
            do {
                try await WebSocketClient.connect(host: url.host, port: url.port, path: "\(url.basePath)/ws?clientId=\(id)") { session in
                    // Connected once upgraded: ComfyUI's first `status` frame can arrive in the same read as
                    // the 101 answer and is not guaranteed to reach us, so nothing may wait for it.
                    self.connected(id)
                    // Type-4 frames carry prompt and node ids; only honoured as the first client message.
                    try await session.send(.text(#"{"type": "feature_flags", "data": {"supports_preview_metadata": true}}"#))
                    for try await message in session.messages {
                        switch message {
                        case .text(let text):
                            if let event = ComfyEvent.decode(Array(text.utf8)) { self.handle(event) }
                        case .binary(let bytes):
                            if let frame = ComfyBinaryFrame.decode(bytes) { self.handle(frame) }
                        }
                    }
                }
                lastError = "WebSocket closed by the server"
            } catch {
                lastError = "WebSocket: \(error)"
            }
            if isConnected { backoff = .milliseconds(100) }
            disconnected()
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
        disconnected()
    }

    /// Waits until the socket is up, at most `timeout`. Returns whether it is.
    func waitUntilConnected(timeout: Duration) async -> Bool {
        if isConnected { return true }
        let key = UUID()
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.resumeConnectedWaiter(key)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { connectedWaiters[key] = $0 }
        } onCancel: {
            Task { await self.resumeConnectedWaiter(key) }
        }
        timer.cancel()
        return isConnected
    }

    private func resumeConnectedWaiter(_ key: UUID) {
        connectedWaiters.removeValue(forKey: key)?.resume()
    }

    private func handle(_ event: ComfyEvent) {
        let promptID: String?
        switch event {
        case .executionStart(let id), .executionCached(let id, _), .executionSuccess(let id), .executionInterrupted(let id, _, _), .executed(let id, _, _):
            promptID = id
        case .executionError(let failure):
            promptID = failure.promptID
        case .executing(let id, let node):
            // A replay to a late joiner has no prompt id: it belongs to the running prompt.
            promptID = id ?? runningPromptID
            runningPromptID = node == nil ? nil : promptID
        case .progress(let id, _, _, _):
            promptID = id ?? runningPromptID
        case .status, .other:
            promptID = nil
        }
        guard let promptID, var slot = slots[promptID] else { return }
        monitor.progressed(at: .now)
        if slot.watch.apply(event) { slot.watch.job.onProgress?(slot.watch.progress) }
        slots[promptID] = slot
        if slot.watch.ending != nil { settle(promptID) }
    }

    private func handle(_ frame: ComfyBinaryFrame) {
        switch frame {
        case .imageWithMetadata(let promptID, let nodeID, let mimeType, let bytes):
            guard let promptID = promptID ?? runningPromptID else { return }
            record(frame: bytes, mimeType: mimeType ?? sniffMimeType(bytes), node: nodeID, promptID: promptID)
        case .image(let format, let bytes):
            guard let promptID = runningPromptID else { return }
            let mimeType = format == .jpeg ? "image/jpeg" : format == .png ? "image/png" : sniffMimeType(bytes)
            record(frame: bytes, mimeType: mimeType, node: nil, promptID: promptID)
        case .text, .unknown:
            break
        }
    }

    /// Keeps a result frame; hands a sampler's latent preview (JPEG, from a non-output node) to the job.
    private func record(frame bytes: [UInt8], mimeType: String, node: String?, promptID: String) {
        guard var slot = slots[promptID] else { return }
        monitor.progressed(at: .now)
        let node = node ?? slot.watch.currentNode
        if mimeType == "image/jpeg", !slot.watch.job.isWebSocketOutput(node) {
            slot.watch.job.onPreview?(bytes, mimeType)
            return
        }
        slot.watch.apply(frameFrom: node, bytes: bytes, mimeType: mimeType)
        slots[promptID] = slot
    }

    private func connected(_ socketID: String) {
        clientID = socketID
        monitor.connected(at: .now)
        lastError = nil
        logger.info("ComfyUI WebSocket connected")
        publishHealth()
        for waiter in connectedWaiters.values { waiter.resume() }
        connectedWaiters.removeAll()
        let stale = slots.filter { $0.value.clientID != socketID || $0.value.watch.missedEvents }.map(\.key)
        if !stale.isEmpty {
            Task { await self.reconcile(stale) }
        }
    }

    private func disconnected() {
        guard isConnected else { return }
        monitor.disconnected(at: .now)
        clientID = nil
        runningPromptID = nil
        logger.warning("ComfyUI WebSocket lost", metadata: ["comfy.in_flight": "\(slots.count)"])
        for key in slots.keys { slots[key]?.watch.missedEvents = true }
        publishHealth()
    }

    // MARK: Prompt slots

    func register(_ watch: PromptWatch, clientID: String) {
        slots[watch.promptID] = WatchSlot(watch: watch, clientID: clientID)
    }

    /// Suspends until the prompt ends (or is settled by reconciliation / abandoned).
    func awaitEnding(_ promptID: String) async throws -> PromptWatch {
        try await withCheckedThrowingContinuation { continuation in
            guard slots[promptID] != nil else {
                continuation.resume(throwing: ComfyError.cancelled)
                return
            }
            slots[promptID]?.waiter = continuation
            if slots[promptID]?.watch.ending != nil { settle(promptID) }
        }
    }

    /// Hands the ended watch to its waiter and forgets it.
    func settle(_ promptID: String) {
        guard let slot = slots[promptID], let waiter = slot.waiter else { return }
        slots[promptID] = nil
        waiter.resume(returning: slot.watch)
    }

    /// Ends every wait with `error` (the pool then runs the jobs elsewhere).
    func failAll(with error: Error, cancelOnServer cancel: Bool) {
        let promptIDs = Array(slots.keys)
        for promptID in promptIDs {
            fail(promptID, with: error)
            if cancel { Task { await self.cancelOnServer(promptID) } }
        }
    }

    /// Ends a wait with an error and forgets the prompt.
    func fail(_ promptID: String, with error: Error) {
        guard let slot = slots.removeValue(forKey: promptID) else { return }
        slot.waiter?.resume(throwing: error)
    }

    func slot(_ promptID: String) -> WatchSlot? { slots[promptID] }

    func markEnded(_ promptID: String, _ ending: PromptWatch.Ending, files: [String: [ComfyImageReference]]) {
        guard var slot = slots[promptID] else { return }
        slot.watch.settle(ending, files: files)
        slots[promptID] = slot
        settle(promptID)
    }
}

/// Guesses an image's type from its first bytes.
func sniffMimeType(_ bytes: [UInt8]) -> String {
    if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return "image/png" }
    if bytes.starts(with: [0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
    if bytes.count >= 12, bytes.starts(with: Array("RIFF".utf8)), Array(bytes[8..<12]) == Array("WEBP".utf8) { return "image/webp" }
    if bytes.starts(with: Array("GIF8".utf8)) { return "image/gif" }
    return "application/octet-stream"
}
