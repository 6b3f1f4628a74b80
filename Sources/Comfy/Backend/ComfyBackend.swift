import Foundation
import Logging
import NIOConcurrencyHelpers

/// One ComfyUI server: runs jobs on it, one attempt each, and keeps its health.
///
/// Made of three parts that change for different reasons: `ComfyConnection` owns the socket
/// and hands its events over as a stream, `PromptTracker` says which event belongs to which
/// prompt and what follows from it, and `ComfyRESTClient` makes the REST calls. This actor
/// only executes the tracker's effects. Retrying a failed job is the scheduler's business.
public actor ComfyBackend {
    /// Where the server is.
    public nonisolated let url: ComfyServerURL
    let rest: ComfyRESTClient
    let logger: Logger
    let timing: BackendTiming
    private let connection: ComfyConnection
    /// ComfyUI's input folder as this machine sees it (`COMFYUI_INPUT_DIR`), if it is shared.
    let inputFolder: ComfyInputFolder?
    /// What the last probe of `inputFolder` found (`inputFolderAccess(_:)`); `nil`: probe again.
    var inputFolderAccess: InputFolderAccess?

    enum InputFolderAccess {
        /// ComfyUI reads the folder the path led to; writes go there only while it still does.
        case reads(ComfyInputFolder.Identity)
        case doesNotRead
    }

    var tracker = PromptTracker()
    /// Jobs waiting for their prompt's end, by prompt id.
    let endings = WaiterTable<String, PromptWatch>()
    /// Wakes `watchHealth` when its deadlines may have moved.
    let healthNudges = WaiterTable<Int, Void>()
    /// Jobs waiting for the socket to come up, and their keys, named on the actor before their
    /// wait begins (off it): a connection in between is kept for them, not missed.
    private let connectionWaiters = WaiterTable<UUID, Void>()
    private var awaitingConnection: Set<UUID> = []
    /// Prompts of an earlier life of this gateway that nobody waits for any more: those that
    /// carry `leftoverMark`, or that this matches by their workflow, are removed from ComfyUI's
    /// queue at each connection (`clearLeftovers`).
    private var leftovers: (@Sendable (ComfyQueueEntry) -> Bool)?
    /// What this process (and the next one on its `STATE_DIR`) marks its prompts that end with
    /// it; `nil`: none are marked.
    let leftoverMark: String?
    /// Whether result PNGs keep ComfyUI's graph chunks (`WorkflowMetadata`).
    let keepsWorkflowMetadata: Bool
    /// Clean-ups on ComfyUI that must outlive the job that asks for them (a cancelled caller).
    private let chores: AsyncStream<Chore>.Continuation
    private let choreStream: AsyncStream<Chore>

    /// Why the backend last failed, for `/healthz`; read without a hop onto the actor.
    public nonisolated var lastError: String? { lastErrorBox.withLockedValue { $0 } }
    /// The backend's models as last read (at connect, then every `modelRefreshInterval`);
    /// `nil` until read, or from a ComfyUI that does not list them.
    public nonisolated var models: ModelCatalogue? { modelsBox.withLockedValue { $0 } }
    let modelsBox = NIOLockedValueBox<ModelCatalogue?>(nil)
    private let lastErrorBox = NIOLockedValueBox<String?>(nil)

    func record(error: String?) {
        lastErrorBox.withLockedValue { $0 = error }
    }
    public var isConnected: Bool { monitor.isConnected }

    /// The health rules (see ComfyBackend+Health).
    var monitor: BackendHealthMonitor
    private var reportedInFlight = 0
    /// Ended prompts whose history entries are to be deleted, and whether a deletion runs.
    private var historyToDelete: [String] = []
    private var deletingHistory = false
    static let historyDeletionBatch = 100
    var publishedHealth = BackendHealth.down
    let healthContinuation: AsyncStream<BackendHealth>.Continuation
    /// Every change of `health`, for the scheduler.
    public nonisolated let healthChanges: AsyncStream<BackendHealth>
    let modelsContinuation: AsyncStream<Void>.Continuation
    /// Each change of the models read (`models`): jobs waiting for a backend with theirs may run.
    public nonisolated let modelChanges: AsyncStream<Void>

    /// Work on ComfyUI that no caller waits for.
    enum Chore: Sendable {
        /// Remove the prompt from the queue, interrupt it if it runs.
        case cancel(String)
        /// The same, but the interrupt only once `/queue` shows the prompt running: one that
        /// may have ended already must not get it (a ComfyUI without targeted interrupts stops
        /// whatever runs).
        case stop(String)
        /// Forget the history entries of the ended prompts gathered in `historyToDelete`.
        case deleteGatheredHistory
        /// Settle prompts from `/history` after missed events.
        case reconcile([String])
        /// Read the model lists again.
        case refreshModels
        /// Remove the prompts `leftovers` matches that this process does not track.
        case clearLeftovers
    }

    public init(
        url: ComfyServerURL, http: CurlHTTPClient, timing: BackendTiming = BackendTiming(), inputFolder: ComfyInputFolder? = nil,
        maxMessageBytes: Int = ComfyConnection.defaultMaxMessageBytes, leftoverMark: String? = nil, keepsWorkflowMetadata: Bool = false,
        logger: Logger
    ) {
        self.url = url
        self.leftoverMark = leftoverMark
        self.keepsWorkflowMetadata = keepsWorkflowMetadata
        self.inputFolder = inputFolder
        rest = ComfyRESTClient(url: url, http: http)
        connection = ComfyConnection(url: url, silenceLimit: timing.pingInterval, maxMessageBytes: maxMessageBytes)
        self.timing = timing
        monitor = BackendHealthMonitor(timing: timing, now: .now)
        (healthChanges, healthContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        (modelChanges, modelsContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        (choreStream, chores) = AsyncStream.makeStream()
        var logger = logger
        logger[metadataKey: "comfy.backend"] = "\(url)"
        self.logger = logger
    }

    /// How many prompts this gateway has in flight here.
    public var inFlight: Int { tracker.count }

    /// Keeps the socket open and acts on what it hears, and does the clean-ups, until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.connection.run() }
            group.addTask {
                await withDiscardingTaskGroup { chores in
                    for await chore in self.choreStream {
                        chores.addTask { await self.perform(chore) }
                    }
                }
            }
            for await event in connection.events {
                handle(event)
            }
            chores.finish()
        }
        if isConnected { disconnected(reason: "stopped") }
    }

    func schedule(_ chore: Chore) {
        chores.yield(chore)
    }

    /// Removes an ended prompt's history entry (a `keepsHistory` job's, once its end is stored),
    /// in one request with the others that end meanwhile.
    public func deleteHistory(_ promptID: String) {
        historyToDelete.append(promptID)
        guard !deletingHistory else { return }
        deletingHistory = true
        schedule(.deleteGatheredHistory)
    }

    /// The next ids to forget (a bounded request's worth); none left ends the deleting.
    private func takeGatheredHistory() -> [String] {
        let batch = Array(historyToDelete.prefix(Self.historyDeletionBatch))
        historyToDelete.removeFirst(batch.count)
        if batch.isEmpty { deletingHistory = false }
        return batch
    }

    private func perform(_ chore: Chore) async {
        switch chore {
        case .cancel(let promptID): await rest.cancel(promptID)
        case .stop(let promptID):
            guard let entry = try? await rest.queueEntries().first(where: { $0.promptID == promptID }) else { return }
            await remove([entry])
        case .deleteGatheredHistory:
            // What ends while one request runs goes in the next: a busy backend gets one for many prompts.
            while case let promptIDs = takeGatheredHistory(), !promptIDs.isEmpty { await rest.deleteHistory(promptIDs) }
        case .reconcile(let promptIDs): await reconcile(promptIDs)
        case .refreshModels: await refreshModels()
        case .clearLeftovers: await clearLeftoverPrompts()
        }
    }

    /// Has ComfyUI's queue cleared of the prompts `matching` accepts that this process does not
    /// track, now and at every connection: a crashed gateway's drawing prompts would otherwise
    /// run for nobody, ahead of every painter's next one.
    func clearLeftovers(matching: @escaping @Sendable (ComfyQueueEntry) -> Bool) {
        leftovers = matching
        if isConnected { schedule(.clearLeftovers) }
    }

    /// Takes these queue entries off ComfyUI. Waiting ones only leave the queue: an interrupt
    /// (on a ComfyUI without targeted ones, any prompt) is sent only for one seen running.
    private func remove(_ entries: [ComfyQueueEntry]) async {
        await rest.removeFromQueue(entries.filter { !$0.isRunning }.map(\.promptID))
        for entry in entries where entry.isRunning { await rest.cancel(entry.promptID) }
    }

    private func clearLeftoverPrompts() async {
        guard leftoverMark != nil || leftovers != nil, let entries = try? await rest.queueEntries() else { return }
        // Tracked before they are posted: a prompt of this process is never taken for a leftover.
        let stale = entries.filter { entry in
            tracker.slot(entry.promptID) == nil
                && (leftoverMark.map(entry.isLeftover(of:)) == true || (entry.process != ComfyQueueEntry.thisProcess && leftovers?(entry) == true))
        }
        guard !stale.isEmpty else { return }
        await remove(stale)
        logger.info("prompts left by an earlier run removed from ComfyUI's queue", metadata: ["comfy.prompts": "\(stale.count)"])
    }

    /// Waits until the socket is up, at most `timeout`. Returns whether it is.
    func waitUntilConnected(timeout: Duration) async -> Bool {
        if isConnected { return true }
        let key = UUID()
        awaitingConnection.insert(key)
        _ = await connectionWaiters.wait(for: key, until: .now + timeout)
        awaitingConnection.remove(key)
        connectionWaiters.discard(key)
        return isConnected
    }

    private func handle(_ event: ComfyConnection.Event) {
        switch event {
        case .connected(let clientID):
            monitor.connected(at: .now)
            nudgeHealth()
            record(error: nil)
            logger.info("ComfyUI WebSocket connected")
            // Perhaps another ComfyUI under the same URL: whether it reads the input folder is asked again.
            inputFolderAccess = nil
            publishHealth()
            execute(tracker.connected(clientID))
            schedule(.refreshModels)
            if leftoverMark != nil || leftovers != nil { schedule(.clearLeftovers) }
            for key in awaitingConnection { connectionWaiters.resume(key, with: .success(())) }
            awaitingConnection.removeAll()
        case .disconnected(let reason):
            record(error: reason)
            disconnected(reason: reason)
        case .message(let message):
            execute(tracker.apply(message))
        case .frame(let frame):
            execute(tracker.apply(frame))
        }
    }

    private func disconnected(reason: String) {
        guard isConnected else { return }
        monitor.disconnected(at: .now)
        nudgeHealth()
        tracker.disconnected()
        logger.warning("ComfyUI WebSocket lost", metadata: ["comfy.in_flight": "\(tracker.count)"])
        publishHealth()
    }

    /// Carries out what the tracker decided.
    func execute(_ effects: [PromptTracker.Effect]) {
        for effect in effects {
            switch effect {
            case .activity:
                monitor.progressed(at: .now)
            case .started(let promptID):
                tracker.slot(promptID)?.watch.job.events?.yield(.executionStarted)
            case .progressed(let promptID, let progress):
                tracker.slot(promptID)?.watch.job.events?.yield(.progress(progress))
            case .preview(let promptID, let bytes, let mimeType):
                tracker.slot(promptID)?.watch.job.events?.yield(.preview(bytes: bytes, mimeType: mimeType))
            case .ended(let promptID):
                if let slot = tracker.remove(promptID) {
                    endings.resume(promptID, with: .success(slot.watch))
                }
            case .reconcile(let promptIDs):
                schedule(.reconcile(promptIDs))
            case .messageTooLarge(nil, let bytes):
                logger.warning("ComfyUI sent a WebSocket message larger than the gateway reads, for no prompt of ours", metadata: ["bytes": "\(bytes)"])
            case .messageTooLarge(let promptID?, let bytes):
                logger.warning(
                    "ComfyUI sent a WebSocket message larger than the gateway reads; its prompt is stopped",
                    metadata: ["comfy.prompt_id": "\(promptID)", "bytes": "\(bytes)"]
                )
                schedule(.stop(promptID))
                fail(promptID, with: ComfyError(
                    code: .executionFailed,
                    message: "ComfyUI sent a message of \(bytes) bytes for this prompt (an image or a node's output), more than the gateway reads (\(connection.maxMessageBytes) bytes, COMFYUI_MAX_MESSAGE_BYTES); the prompt was stopped",
                    backend: url.description
                ))
            }
        }
        reportInFlight()
    }

    // MARK: Prompts in flight

    func track(_ watch: PromptWatch, clientID: String) {
        tracker.track(watch, clientID: clientID)
        reportInFlight()
    }

    /// Ends a prompt's wait with an error and forgets it.
    func fail(_ promptID: String, with error: Error) {
        guard tracker.remove(promptID) != nil else { return }
        endings.resume(promptID, with: .failure(error))
        reportInFlight()
    }

    /// Forgets a prompt whose job stopped waiting (timeout, cancellation).
    func abandon(_ promptID: String) {
        tracker.remove(promptID)
        endings.discard(promptID)
        reportInFlight()
    }

    /// Ends every wait with `error` (the pool then runs the jobs elsewhere).
    func failAll(with error: Error, cancelOnServer cancel: Bool) {
        for promptID in tracker.slots.keys.sorted() {
            fail(promptID, with: error)
            if cancel { schedule(.cancel(promptID)) }
        }
    }

    private func reportInFlight() {
        guard tracker.count != reportedInFlight else { return }
        reportedInFlight = tracker.count
        monitor.promptsInFlight(tracker.count, at: .now)
        nudgeHealth()
    }
}
