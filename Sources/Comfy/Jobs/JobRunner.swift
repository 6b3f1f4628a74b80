import Foundation
import Logging
import Metrics

/// Runs stored jobs: every job is in the store before it is started, its prompt is recorded
/// before it is submitted, and its end is recorded once. A start-up takes up what the last
/// process left: queued jobs run, running ones are reattached by their prompt id.
///
/// Sync jobs (a caller waits on the connection) start at once; async ones wait in this
/// runner's queue, owners in turn, so that at most `maxRunningAsync` of them wait in the pool.
public actor JobRunner {
    public struct Configuration: Sendable {
        /// One job's whole run, queue included (an async job's: from when a backend takes it).
        public var timeout: Duration
        /// How long after its submission an async job may wait for a backend: a busy one (but
        /// at least `timeout` once handed to the pool), and one to come back while none that
        /// can run it is up (`PromptJob.queueDeadline`, `parked`).
        public var queueTimeout: Duration
        /// Async jobs handed to the pool at once; the rest wait here (in the store).
        public var maxRunningAsync: Int
        /// How long an idempotency key names its job.
        public var idempotencyWindow: Duration
        /// Sync jobs (generate calls) with an idempotency key one owner may hang up on and leave
        /// running (0: no limit); past it, one hung up on is cancelled, as one without a key is.
        /// Else one caller could hang up on hundreds and fill the queue every other caller and
        /// painter needs, while a caller whose connection dropped can still pick up its result.
        public var maxAbandonedPerOwner: Int
        /// Async jobs that may wait here to start (0: no limit); past it a new submission is
        /// refused (`waitingAtLimit`). Each holds its workflow in memory while it waits.
        public var maxWaiting: Int
        /// How many processes may end while running one job (crashed, killed) before it is
        /// failed instead of taken up again (`JobCrashLimitReached`).
        public var crashLimit: Int

        public init(
            timeout: Duration, maxRunningAsync: Int, idempotencyWindow: Duration = .seconds(24 * 3600), maxAbandonedPerOwner: Int = 0,
            maxWaiting: Int = 0, crashLimit: Int = 3, queueTimeout: Duration = .seconds(3600)
        ) {
            self.timeout = timeout
            self.queueTimeout = queueTimeout
            self.maxRunningAsync = maxRunningAsync
            self.idempotencyWindow = idempotencyWindow
            self.maxAbandonedPerOwner = maxAbandonedPerOwner
            self.maxWaiting = maxWaiting
            self.crashLimit = max(1, crashLimit)
        }
    }

    /// A job this process has not finished: its progress, its prompt, who listens.
    private struct Live {
        var progress: Double = 0
        /// When ComfyUI began executing its prompt: GPU time counts from here.
        var executionStartedAt: ContinuousClock.Instant?
        /// When its prompt was submitted (for jobs whose running state is not written).
        var startedAt: Date?
        var promptID: String?
        var backend: String?
        var watchers: [UUID: AsyncStream<JobUpdate>.Continuation] = [:]

        /// The prompt submitted (or reattached) for it, and where.
        var prompt: (id: String, backend: String)? {
            guard let promptID, let backend else { return nil }
            return (promptID, backend)
        }
    }

    private enum Start: Sendable {
        case fresh(JobRecord)
        /// Its prompt was submitted by an earlier process.
        case reattach(JobRecord, promptID: String, backend: String)
    }

    private enum Outcome: Sendable {
        case ran(Result<GeneratedImage, any Error>)
        case cancelled
    }

    public nonisolated let store: any JobStore
    private let pool: BackendPool
    private let images: any ImageStore
    /// Input images the jobs' workflows name, uploaded to the backend each attempt lands on.
    private let inputs: InputImages?
    public nonisolated let configuration: Configuration
    /// The API's error answer for a failed job (status and body), as the sync endpoints give it.
    private let describe: @Sendable (any Error) -> JobFailure
    /// Wakes the webhook sender when a job with a webhook ended.
    private let webhookDue: @Sendable () -> Void
    /// An API key's cap of prompts on the GPUs (`--max-running`).
    private let maxRunning: @Sendable (_ key: String) async -> Int?
    private let logger: Logger

    /// Jobs this process has not finished: waiting here (async, in `waiting`) or started.
    private var live: [String: Live] = [:]
    /// Async jobs not handed to the pool yet, oldest first.
    private var waiting: [JobRecord] = []
    /// Of those, the ones back because no backend that can run them is up while another is
    /// (`ComfyError.waitsForBackend`), with the end of their queue time: not handed to the pool
    /// again until a backend's health changes, failed once that time is over (`watchParked`).
    private var parked: [String: ContinuousClock.Instant] = [:]
    /// When `watchParked` wakes next, while it waits.
    private var parkedWake: ContinuousClock.Instant?
    /// Async jobs handed to the pool and not ended, by owner.
    private var startedByOwner: [String: Int] = [:]
    private var runningAsync: Int { startedByOwner.values.reduce(0, +) }
    /// Owners' caps of running prompts (API keys' `--max-running`), as their jobs came in.
    private var ownerCaps: [String: Int] = [:]
    /// Sync jobs submitted here and not ended: their owners, by job id.
    private var syncOwners: [String: String] = [:]
    /// Of those, the ones whose callers hung up and that run on (`maxAbandonedPerOwner`).
    private var abandoned: Set<String> = []
    private var stopping = false
    /// The store, when several instances share it: leases, take-over, changes from the others.
    private nonisolated var shared: (any SharedJobStore)? { store as? any SharedJobStore }
    /// Watchers of jobs another instance runs, by job id: told what that instance announces.
    private var remoteWatchers: [String: [UUID: AsyncStream<JobUpdate>.Continuation]] = [:]
    /// Live jobs that ended or were taken over elsewhere: their run stops without a word to the store.
    private var endedElsewhere: Set<String> = []
    private let cancels = WaiterTable<String, Void>()
    /// Ends the store refused to write (a full disk), written again until it takes them. Alone
    /// on a store nobody else would settle them before the next start (shared, an instance
    /// taking the job over does).
    private var unsettled: [String: Ending] = [:]
    /// Live jobs a caller asked to cancel while they ran: one put back to wait for room
    /// (`waitsAgain`) is cancelled instead, whenever the cancel came.
    private var cancelAsked: Set<String> = []
    /// Keyed sync jobs the gateway cancels because their caller went: their key is let go with
    /// the end (`finish(releasingKey:)`), written by the run's task (the caller's is cancelled,
    /// and the store refuses it).
    private var keyLetGo: Set<String> = []

    private struct Ending {
        var status: JobStatus
        var result: JobResult?
        var failure: JobFailure?
        var usage: (gpuMilliseconds: Int?, imageBytes: Int)?
        var releasingKey = false
        /// Its prompt, whose history entry goes once the end is stored.
        var prompt: (id: String, backend: String)?
    }

    /// How often ends the store refused are written again.
    static let settleRetryInterval: Duration = .seconds(5)
    private let starts: AsyncStream<Start>.Continuation
    private let startStream: AsyncStream<Start>

    public init(
        store: any JobStore, pool: BackendPool, images: any ImageStore, inputs: InputImages? = nil, configuration: Configuration,
        describe: @escaping @Sendable (any Error) -> JobFailure, webhookDue: @escaping @Sendable () -> Void = {},
        maxRunning: @escaping @Sendable (_ key: String) async -> Int? = { _ in nil }, logger: Logger
    ) {
        self.maxRunning = maxRunning
        self.store = store
        self.pool = pool
        self.images = images
        self.inputs = inputs
        self.configuration = configuration
        self.describe = describe
        self.webhookDue = webhookDue
        self.logger = logger
        (startStream, starts) = AsyncStream.makeStream()
    }

    // MARK: Running

    /// Takes up what the store holds unfinished, then runs jobs as they come, until cancelled.
    /// Cancelled (the gateway stops), unfinished jobs stay in the store as they are and their
    /// prompts stay on ComfyUI: the next start takes them up (`handBack` follows).
    public func run() async {
        // Alone on its store it takes up what the last process left; sharing one, it takes over
        // whatever a silent instance leaves, as the leases run out.
        let shared = self.shared
        if shared == nil { await recover() }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.watchParked() }
            if let shared {
                group.addTask { await self.keepLeases(shared) }
                group.addTask { await self.followChanges(shared) }
            } else {
                group.addTask { await self.keepSettling() }
            }
            for await start in startStream {
                group.addTask { await self.execute(start) }
            }
        }
    }

    /// Once `run` returned (in a task not cancelled: the store refuses calls from one): what this
    /// process leaves, the next (or another instance, at once) takes up, and this stop does not
    /// count as a crash of the jobs it ran.
    public func handBack() async {
        do {
            try await store.handBack()
        } catch {
            logger.warning("cannot hand the running jobs back to the job store; the next start counts this stop as a crash of theirs", metadata: ["error": "\(error)"])
        }
    }

    /// Writes the ends the store refused again, every `settleRetryInterval`, until it takes them.
    private func keepSettling() async {
        while (try? await Task.sleep(for: Self.settleRetryInterval)) != nil {
            for id in unsettled.keys {
                // Still refused: the next round tries again.
                _ = try? await settleUnsettled(id)
            }
        }
    }

    /// Writes an end the store refused before; returns the final record once written.
    private func settleUnsettled(_ id: String) async throws -> JobRecord? {
        guard let ending = unsettled[id] else { return nil }
        let final = try await store.finish(
            id, status: ending.status, result: ending.result, failure: ending.failure,
            gpuMilliseconds: ending.usage?.gpuMilliseconds, imageBytes: ending.usage?.imageBytes, releasingKey: ending.releasingKey, at: Date()
        )
        unsettled[id] = nil
        guard let final else { return nil }
        logger.notice("a job's end is stored at last", metadata: ["job.id": "\(id)", "job.status": "\(ending.status.rawValue)"])
        if let prompt = ending.prompt { await pool.deleteHistory(prompt.id, backend: prompt.backend) }
        if final.webhookURL != nil { webhookDue() }
        return final
    }

    /// No new jobs start (draining); those unfinished are left for the next start.
    public func stopStarting() {
        stopping = true
    }

    private func recover() async {
        do {
            let unfinished = try await store.takeUpUnfinished()
            await adopt(unfinished)
            if !unfinished.isEmpty { logger.notice("took up the jobs the last gateway process left", metadata: ["jobs": "\(unfinished.count)"]) }
        } catch {
            logger.error("cannot read unfinished jobs from the job store", metadata: ["error": "\(error)"])
        }
    }

    /// Takes up unfinished jobs another process left (the last one, or a dead instance): queued
    /// ones run, running ones are reattached by their prompt id, and those whose caller went
    /// with that process are cancelled, as are those running each time `crashLimit` processes
    /// died.
    private func adopt(_ records: [JobRecord]) async {
        var caps: [String: Int?] = [:]
        // A prompt still waiting in ComfyUI's queue was not what the last process died of.
        let waitingPrompts = await pool.waitingPrompts(on: Set(records.filter { $0.status == .running && !$0.endsWithItsCaller }.compactMap(\.backend)))
        var acquitted: [String] = []
        for record in records {
            if record.endsWithItsCaller {
                // Its caller's connection died with that process, and nobody can ask again.
                _ = try? await store.finish(record.id, status: .cancelled, result: nil, failure: nil, at: Date())
                if let promptID = record.promptID, let backend = record.backend { await pool.cancelPrompt(promptID, backend: backend) }
                await remoteEnded([record.id])
                continue
            }
            // Those who watched it from here while another instance ran it go on watching.
            live[record.id] = Live(watchers: remoteWatchers.removeValue(forKey: record.id) ?? [:])
            // Counted with this process's take-up: the ones before that died running it.
            let crashes = record.processRuns - 1
            if record.status == .running, let promptID = record.promptID, let backend = record.backend, waitingPrompts[backend]?.contains(promptID) == true {
                acquitted.append(record.id)
            } else if record.status == .running, crashes >= configuration.crashLimit {
                logger.error(
                    "a job was running each time the gateway process died; it is failed instead of being taken up again",
                    metadata: ["job.id": "\(record.id)", "crashes": "\(crashes)"]
                )
                if let promptID = record.promptID, let backend = record.backend {
                    submitted(record.id, promptID: promptID, backend: backend)
                    await pool.stopPrompt(promptID, backend: backend)
                }
                _ = try? await settle(record.id, status: .failed, result: nil, failure: describe(JobCrashLimitReached(crashes: crashes)), image: nil)
                continue
            }
            if let key = record.keyName {
                // One look-up per key, not per job: a start-up may take up thousands.
                if caps[key] == nil { caps[key] = .some(await maxRunning(key)) }
                ownerCaps[record.owner] = caps[key] ?? nil
            }
            if record.status == .running, let promptID = record.promptID, let backend = record.backend {
                if record.kind == .async { startedByOwner[record.turnOwner, default: 0] += 1 }
                starts.yield(.reattach(record, promptID: promptID, backend: backend))
            } else if record.kind == .async {
                // Taken up anew (it may have been parked here before another instance had it).
                parked[record.id] = nil
                waiting.append(record)
            } else {
                starts.yield(.fresh(record))
            }
        }
        do {
            try await store.acquit(acquitted)
        } catch {
            logger.warning("cannot tell the job store that jobs taken up were waiting on ComfyUI; a crash stays counted against them", metadata: ["error": "\(error)"])
        }
        startWaiting()
    }

    // MARK: Several instances

    /// Renews this instance's leases and takes over expired ones, three times per lease.
    private func keepLeases(_ shared: any SharedJobStore) async {
        while !Task.isCancelled {
            do {
                // Renewed again after each full batch taken over: taking over thousands must not
                // let this instance's own leases run out meanwhile (it would take its own jobs).
                while true {
                    let lost = try await shared.renewLeases()
                    if !lost.isEmpty {
                        logger.warning("another gateway instance took over jobs this one ran (this one was paused or cut off)", metadata: ["jobs": "\(lost.count)"])
                        await stopElsewhere(lost)
                        // That instance counted this one dead; it is not (nor would a crash be these jobs' doing).
                        try? await shared.acquit(lost)
                    }
                    guard !stopping else { break }
                    let taken = try await shared.takeOverExpired(limit: 64)
                    guard !taken.isEmpty else { break }
                    logger.notice("took over jobs whose gateway instance stopped renewing their lease", metadata: ["jobs": "\(taken.count)"])
                    await adopt(taken)
                    if taken.count < 64 { break }
                }
            } catch {
                logger.warning("cannot renew the job leases", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: shared.leaseTimeout / 3)
        }
    }

    /// Follows what the other instances announce: ends and progress of jobs watched here, and
    /// ends of jobs running here that were cancelled there.
    private func followChanges(_ shared: any SharedJobStore) async {
        for await change in shared.changes() {
            switch change {
            case .ended(let id):
                if live[id] != nil { await stopElsewhere([id]) } else { await remoteEnded([id]) }
            case .progress(let id, let value):
                // A watcher whose stream was dropped (its client left) goes here, not at the end.
                if let watchers = remoteWatchers[id] {
                    let listening = watchers.filter { if case .terminated = $0.value.yield(.progress(value)) { false } else { true } }
                    remoteWatchers[id] = listening.isEmpty ? nil : listening
                }
            case .resync:
                await remoteEnded(Array(remoteWatchers.keys))
            case .running, .slotFreed, .backendReported:
                break
            }
        }
    }

    /// Live jobs that another instance ended or took over: their runs here stop, leaving the
    /// store and the prompt to that instance.
    private func stopElsewhere(_ ids: [String]) async {
        for id in ids where live[id] != nil {
            endedElsewhere.insert(id)
            if let index = waiting.firstIndex(where: { $0.id == id }) {
                waiting.remove(at: index)
                parked[id] = nil
                await endElsewhere(id)
            } else {
                cancels.resume(id, with: .success(()))
            }
        }
    }

    /// Tells a job's watchers here how it ended elsewhere, or that another instance has it now.
    /// A prompt submitted here that the job no longer names (the instance that took it over
    /// submitted its own), or whose job was cancelled (the cancel may have reached ComfyUI
    /// before the prompt did), runs for nobody: it is removed.
    private func endElsewhere(_ id: String, submittedHere prompt: (id: String, backend: String)? = nil) async {
        endedElsewhere.remove(id)
        let record = try? await store.job(id)
        if let prompt, let record, record.promptID != prompt.id || record.status == .cancelled {
            logger.notice("removing a prompt sent for a job another instance took over or cancelled", metadata: ["job.id": "\(id)", "comfy.prompt_id": "\(prompt.id)"])
            await pool.cancelPrompt(prompt.id, backend: prompt.backend)
        }
        if let record, record.status.isFinal {
            // Ended there: nothing of it is renewed here any more. (A job taken over stays
            // fenced: whatever this instance might still write for it is refused.)
            shared?.forget(id)
            for watcher in live.removeValue(forKey: id)?.watchers.values ?? [:].values {
                watcher.yield(.finished(record, image: nil))
                watcher.finish()
            }
        } else {
            endWatchers(of: id, with: .stopped(ComfyError(code: .backendUnavailable, message: "another gateway instance runs this job now; ask for it again")))
        }
    }

    /// Remote watchers of jobs that may have ended: each final one is told and let go.
    private func remoteEnded(_ ids: [String]) async {
        for id in ids where remoteWatchers[id] != nil {
            guard let record = try? await store.job(id), record.status.isFinal else { continue }
            for watcher in remoteWatchers.removeValue(forKey: id)?.values ?? [:].values {
                watcher.yield(.finished(record, image: nil))
                watcher.finish()
            }
        }
    }

    private func endRemoteWatchers(of id: String) {
        for watcher in remoteWatchers.removeValue(forKey: id)?.values ?? [:].values { watcher.finish() }
    }

    /// Hands waiting async jobs to the pool, owners in turn: the next is the oldest job of the
    /// owner with the fewest jobs handed over, so one key's long queue does not hold up another's.
    private func startWaiting() {
        while !stopping, runningAsync < configuration.maxRunningAsync, !waiting.isEmpty {
            // An owner at its cap of running prompts gets no more: they would only wait in the pool.
            func load(_ owner: String) -> Int? {
                let started = startedByOwner[owner, default: 0]
                if let cap = ownerCaps[owner], started >= cap { return nil }
                return started
            }
            var next: Int?
            for index in waiting.indices where parked[waiting[index].id] == nil {
                guard let candidate = load(waiting[index].turnOwner) else { continue }
                if let best = next, let bestLoad = load(waiting[best].turnOwner), bestLoad <= candidate { continue }
                next = index
            }
            guard let next else { return }
            let record = waiting.remove(at: next)
            startedByOwner[record.turnOwner, default: 0] += 1
            starts.yield(.fresh(record))
        }
    }

    // MARK: Submitting

    /// How many async jobs wait here to start, once that is `maxWaiting` or more: no new one is taken.
    public var waitingAtLimit: Int? {
        configuration.maxWaiting > 0 && waiting.count >= configuration.maxWaiting ? waiting.count : nil
    }

    /// Stores a new job and starts it (sync) or queues it (async). With an idempotency key
    /// already used for the same request, returns that job and starts nothing.
    /// - Parameters:
    ///   - ownerMaxRunning: the owner's cap of prompts on the GPUs (an API key's).
    ///   - maxUnfinished: the most jobs the record's API key may have queued or running.
    public func submit(_ record: JobRecord, requestHash: String?, ownerMaxRunning: Int? = nil, maxUnfinished: Int? = nil) async throws -> JobInsertion {
        guard !stopping else {
            throw ComfyError(code: .backendUnavailable, message: "the gateway is shutting down; try again shortly")
        }
        let insertion = try await store.insert(
            record, requestHash: requestHash, keyWindow: configuration.idempotencyWindow, unfinishedLimit: maxUnfinished
        )
        guard case .created(let record) = insertion else { return insertion }
        ownerCaps[record.owner] = ownerMaxRunning
        live[record.id] = Live()
        if record.kind == .sync {
            syncOwners[record.id] = record.turnOwner
            starts.yield(.fresh(record))
        } else {
            waiting.append(record)
            startWaiting()
        }
        return insertion
    }

    /// The caller of a sync job with an idempotency key hung up: the job runs on for a retry to
    /// find, unless its owner has `maxAbandonedPerOwner` such jobs running already.
    private func keepsRunningAbandoned(_ id: String) -> Bool {
        // Already kept (its retry hung up too): it stays kept.
        guard !abandoned.contains(id), let owner = syncOwners[id] else { return true }
        let cap = configuration.maxAbandonedPerOwner
        // Counted when a caller hangs up (rare), not kept per owner by hand; the set is small.
        guard cap == 0 || abandoned.count(where: { syncOwners[$0] == owner }) < cap else { return false }
        abandoned.insert(id)
        return true
    }

    // MARK: Watching

    /// The stored job, with the progress this process knows; `nil` for an unknown id.
    public func job(_ id: String) async throws -> JobRecord? {
        try await store.job(id).map(withLiveState)
    }

    /// Stored jobs as `job(_:)` answers them.
    public func withLiveState(_ records: [JobRecord]) -> [JobRecord] {
        records.map(withLiveState)
    }

    /// A stored job with what this process knows of it and has not written: its progress, and
    /// the prompt of a job whose running state is kept in memory (`endsWithItsCaller`).
    private func withLiveState(_ stored: JobRecord) -> JobRecord {
        var record = stored
        if let state = live[record.id], !record.status.isFinal {
            record.progress = max(record.progress, state.progress)
            if record.status == .queued, let promptID = state.promptID {
                record.status = .running
                record.promptID = promptID
                record.backend = state.backend
                record.startedAt = record.startedAt ?? state.startedAt
            }
        }
        return record
    }

    /// The job now and, unless it is final, its updates until it is.
    public func watch(_ id: String) async throws -> (JobRecord, AsyncStream<JobUpdate>?)? {
        // Listen first: an end that comes while the store is read is not missed.
        let watcher = addWatcher(id)
        let found: JobRecord?
        do {
            found = try await job(id)
        } catch {
            // Nobody will read it: kept, it would wait for an end that may never be announced.
            if let watcher, let key = watcher.key { remoteWatchers[id]?.removeValue(forKey: key)?.finish() }
            if remoteWatchers[id]?.isEmpty == true { remoteWatchers[id] = nil }
            throw error
        }
        let stream = watcher?.updates
        guard let record = found else {
            endRemoteWatchers(of: id)
            return nil
        }
        if record.status.isFinal, remoteWatchers[id] != nil { await remoteEnded([id]) }
        return (record, record.status.isFinal ? nil : stream)
    }

    /// A stream of the job's updates, if this process runs it, or another instance of a shared
    /// store does (it announces the end). A watcher that goes away is dropped at the next update
    /// (`progressed`) or at the end.
    /// `key` names a remote watcher (another instance runs the job).
    private func addWatcher(_ id: String) -> (updates: AsyncStream<JobUpdate>, key: UUID?)? {
        let (updates, continuation) = AsyncStream.makeStream(of: JobUpdate.self, bufferingPolicy: .bufferingNewest(64))
        if live[id] != nil {
            live[id]?.watchers[UUID()] = continuation
            return (updates, nil)
        } else if shared != nil {
            let key = UUID()
            remoteWatchers[id, default: [:]][key] = continuation
            return (updates, key)
        }
        return nil
    }

    /// Waits for the job's end (a sync caller). When the caller goes away first and
    /// `cancelIfAbandoned` (or its owner has `maxAbandonedPerOwner` abandoned jobs running), the
    /// job is cancelled; else it runs on for a retry to find.
    public func result(of id: String, cancelIfAbandoned: Bool) async throws -> JobUpdate {
        // A job this process runs needs no read of the store: its end comes as an update.
        let updates: AsyncStream<JobUpdate>
        if live[id] != nil, let live = addWatcher(id)?.updates {
            updates = live
        } else {
            guard let (record, stream) = try await watch(id) else {
                throw JobStoreError(.unavailable, "job \(id) is not in the store")
            }
            guard let stream else { return .finished(record, image: nil) }
            updates = stream
        }
        for await update in updates {
            if case .progress = update { continue }
            return update
        }
        guard Task.isCancelled else {
            throw ComfyError(code: .backendUnavailable, message: "the gateway is shutting down")
        }
        if cancelIfAbandoned {
            _ = try? await cancel(id)
        } else if !keepsRunningAbandoned(id) {
            // Its key was given for a retry to find the job; cancelled by the gateway, not by its
            // caller (who may have asked for it, too), it would answer every retry
            // `job_cancelled` for a day: a retry starts anew.
            if !cancelAsked.contains(id) { keyLetGo.insert(id) }
            _ = try? await cancel(id)
        }
        throw ComfyError.cancelled
    }

    // MARK: Cancelling

    /// Cancels a queued or running job and returns it; `nil` when it is final already.
    public func cancel(_ id: String) async throws -> JobRecord? {
        // Its end came before the cancel; only the store refused it so far.
        if unsettled[id] != nil { return try await settleUnsettled(id) }
        if let index = waiting.firstIndex(where: { $0.id == id }) {
            waiting.remove(at: index)
            parked[id] = nil
            // A caller's cancel is not fenced by this instance's lease: lost meanwhile (another
            // instance took the job over), it still ends the job, and that instance's run stops.
            shared?.forget(id)
            return try await settle(id, status: .cancelled, result: nil, failure: nil, image: nil)
        }
        // Not waiting here but live: it runs.
        if live[id] != nil, let updates = addWatcher(id)?.updates {
            // Signalled before any suspension: a caller that went away (a cancelled task) still cancels.
            cancelAsked.insert(id)
            cancels.resume(id, with: .success(()))
            for await update in updates {
                switch update {
                case .progress: continue
                case .finished(let record, _): return record
                case .unstored(let error): throw error
                case .stopped(let error): throw error
                }
            }
            return try await store.job(id)
        }
        // Not running in this process (left by a stopping one, or run by another instance): it
        // ends in the store, and its prompt, if one was submitted, is removed from its backend.
        // Whoever holds its lease (this instance may have lost it): a caller's cancel is not fenced.
        shared?.forget(id)
        let final = try await settle(id, status: .cancelled, result: nil, failure: nil, image: nil)
        if let final, let promptID = final.promptID, let backend = final.backend { await pool.cancelPrompt(promptID, backend: backend) }
        await remoteEnded([id])
        return final
    }

    // MARK: One job

    private func execute(_ start: Start) async {
        let record: JobRecord
        switch start {
        case .fresh(let fresh): record = fresh
        case .reattach(let old, _, _): record = old
        }
        let id = record.id
        // Back among the waiting jobs (no room in the backends' line yet): still this instance's.
        var waitsAgain = false
        defer {
            syncOwners[id] = nil
            cancelAsked.remove(id)
            keyLetGo.remove(id)
            abandoned.remove(id)
            // A cancel that came once the run was over (while its image was stored) is kept by
            // `cancels` for a wait that never comes.
            cancels.discard(id)
            // Marked by a take-over that the run's own end (a closed submit window) got ahead of.
            endedElsewhere.remove(id)
            // Nothing more is written for it here: its lease (or the fence of one lost) goes.
            if !waitsAgain { shared?.forget(id) }
            if record.kind == .async {
                startedByOwner[record.turnOwner, default: 1] -= 1
                if startedByOwner[record.turnOwner] == 0 { startedByOwner[record.turnOwner] = nil }
                startWaiting()
            }
        }
        let outcome = await run(start, record: record)
        switch outcome {
        case .cancelled where endedElsewhere.contains(id):
            await endElsewhere(id, submittedHere: live[id].flatMap(\.prompt))
        case .cancelled:
            // One that ends with its caller keeps no prompt when its run is cancelled: the backend took it off.
            if !record.endsWithItsCaller, let state = live[id], let promptID = state.promptID, let backend = state.backend {
                await pool.cancelPrompt(promptID, backend: backend)
            }
            // With the end, in its (fenced) write: a retry that finds the job cancelled finds its key gone too.
            _ = try? await settle(id, status: .cancelled, result: nil, failure: nil, image: nil, releasingKey: keyLetGo.contains(id))
        case .ran(.success(let image)):
            // GPU time ends with the image's arrival: converting and storing it are the gateway's.
            // A prompt taken up after a restart is timed by ComfyUI's history.
            let gpu = live[id]?.executionStartedAt.map { Int(((ContinuousClock.now - $0).seconds * 1000).rounded()) } ?? image.executionMilliseconds
            do {
                var converted: [ImageData] = []
                var stored: [StoredImage] = []
                for made in image.all {
                    let image = try await ImageTranscoder.convert(made, to: record.outputFormat)
                    converted.append(image)
                    stored.append(try await images.store(image.bytes, mimeType: image.mimeType))
                }
                let imageBytes = converted.reduce(0) { $0 + $1.bytes.count }
                if let key = record.keyName {
                    Counter(label: "comfy_gateway_key_image_bytes_total", dimensions: [("key", key)]).increment(by: imageBytes)
                    if let gpu { FloatingPointCounter(label: "comfy_gateway_key_gpu_seconds_total", dimensions: [("key", key)]).increment(by: Double(gpu) / 1000) }
                }
                _ = try? await settle(id, status: .completed, result: JobResult(stored[0], others: Array(stored.dropFirst())), failure: nil, image: converted.map(\.bytes), usage: (gpu, imageBytes))
            } catch {
                _ = try? await settle(id, status: .failed, result: nil, failure: describe(error), image: nil)
            }
        case .ran(.failure(let error)) where error is SubmitWindowClosed:
            // Its lease may be another instance's by now: it is let go here, and whoever holds
            // it (this one too, once the lease runs out) runs it.
            logger.warning("a job's prompt was not sent: this instance was held up past its lease", metadata: ["job.id": "\(id)"])
            shared?.forget(id)
            endWatchers(of: id, with: .stopped(ComfyError(code: .backendUnavailable, message: "another gateway instance runs this job now; ask for it again")))
        case .ran(.failure(let error)):
            if isInterruption(error) {
                // The gateway stops: the job stays as stored, for the next start.
                let after = record.endsWithItsCaller ? "it was stopped" : "it goes on after the restart (ask for it again later)"
                var reason = error as? ComfyError ?? ComfyError.cancelled
                if reason.code == .cancelled { reason = ComfyError(code: .backendUnavailable, message: "the gateway is shutting down; \(after)") }
                endWatchers(of: id, with: .stopped(reason))
                return
            }
            if let error = error as? ComfyError, error.code == .busy || error.waitsForBackend != nil, record.kind == .async {
                // The backends' line is full (of generate calls), or no backend that can run it is
                // up while another is: a job its caller was told is stored waits instead of
                // failing, for room a second at a time, or parked until a backend comes back.
                if error.code == .busy { try? await Task.sleep(for: .seconds(1)) }
                if endedElsewhere.contains(id) {
                    // Taken over (or ended) by another instance meanwhile.
                    await endElsewhere(id)
                } else if cancelAsked.contains(id) {
                    _ = try? await settle(id, status: .cancelled, result: nil, failure: nil, image: nil)
                } else if stopping {
                    // It stays stored as queued, for the next start.
                    endWatchers(of: id, with: .stopped(ComfyError(code: .backendUnavailable, message: "the gateway is shutting down; it goes on after the restart (ask for it again later)")))
                } else {
                    waitsAgain = true
                    waiting.insert(record, at: 0)
                    if let judgedAt = error.waitsForBackend { park(record, judgedAt: judgedAt) }
                }
                return
            }
            let failure = describe(error)
            if let error = error as? ComfyError, let backend = error.backend {
                // The caller's answer does not name the backend; the operator's log does.
                logger.notice("a job failed on a backend", metadata: ["job.id": "\(id)", "comfy.backend": "\(backend)", "error": "\(error.message)"])
            } else if let error = error as? JobStoreError {
                logger.warning("a job failed: the job store did not answer", metadata: ["job.id": "\(id)", "error": "\(error)"])
            }
            if (error as? ComfyError)?.code == .busy {
                // It never started: a retry with the same key makes a new job.
                try? await store.releaseIdempotencyKey(of: id)
            }
            _ = try? await settle(id, status: .failed, result: nil, failure: failure, image: nil)
        }
    }

    /// Runs the job on the pool until it ends or is cancelled through `cancel`.
    private func run(_ start: Start, record: JobRecord) async -> Outcome {
        let id = record.id
        let (store, pool) = (self.store, self.pool)
        let (events, continuation) = AsyncStream.makeStream(of: JobEvent.self, bufferingPolicy: .bufferingNewest(8))
        var job = PromptJob(workflow: record.workflow, outputNodeID: record.outputNodeID, timeout: configuration.timeout, events: continuation)
        // Nobody takes an unkeyed sync job up again (`endsWithItsCaller`): a stop takes its prompt off ComfyUI.
        job.keepsPromptWhenCancelled = !record.endsWithItsCaller
        job.jobID = id
        job.endsWithProcess = record.endsWithItsCaller
        if record.kind == .async {
            // Nobody waits on a connection: a backend that is down is waited for, within its queue time.
            job.queueDeadline = queueDeadline(of: record)
        }
        // A sync job without an idempotency key ends with its caller, also in a crash (the next
        // start cancels it): its prompt needs no write before it is submitted, which keeps one
        // database round trip off the sync path. Its running state lives in memory (`job(_:)`).
        let resumable = !record.endsWithItsCaller
        // Shared, a prompt is sent within half the lease its running state renewed: an instance
        // paused longer may have lost the job to one that submits it again (a taker that finds
        // no prompt runs the job). Counted from before the write, as a pause may come during it.
        let submitWindow = resumable ? shared.map { $0.leaseTimeout / 2 } : nil
        job.willSubmit = { promptID, backend in
            let asked = ContinuousClock.now
            if resumable {
                guard try await store.markRunning(id, promptID: promptID, backend: backend, at: Date()) else { throw ComfyError.cancelled }
            }
            await self.submitted(id, promptID: promptID, backend: backend)
            return submitWindow.map { asked + $0 }
        }
        // Its history is read by whoever takes the job over until its end is stored (`settle`).
        job.keepsHistory = true
        let cancels = self.cancels
        let prepared = job
        let inputs = self.inputs
        let ownerMaxRunning = ownerCaps[record.owner]
        let turnOwner = record.turnOwner
        let shared = self.shared
        return await withTaskGroup(of: Outcome?.self) { group in
            group.addTask {
                // Other instances hear of every tenth of the way (a write each, not one per step).
                var announced = 0.0
                for await event in events {
                    switch event {
                    case .progress(let value):
                        await self.progressed(id, value)
                        if let shared, value - announced >= 0.1 {
                            announced = value
                            await shared.announceProgress(of: id, value)
                        }
                    case .executionStarted: await self.executionStarted(id)
                    case .preview: break
                    }
                }
                return nil
            }
            group.addTask {
                do {
                    var prepared = prepared
                    prepared.uploads = try await inputs?.uploads(for: prepared.workflow) ?? []
                    switch start {
                    case .fresh:
                        // Stored before any drain began (`submit` refuses while stopping): it is in flight.
                        return .ran(.success(try await pool.run(
                            prepared, priority: .batch, owner: turnOwner, ownerMaxRunning: ownerMaxRunning, acceptedBeforeDrain: true
                        )))
                    case .reattach(_, let promptID, let backend):
                        await self.submitted(id, promptID: promptID, backend: backend)
                        return .ran(.success(try await pool.resume(prepared, promptID: promptID, backend: backend, owner: turnOwner, ownerMaxRunning: ownerMaxRunning)))
                    }
                } catch {
                    return .ran(.failure(error))
                }
            }
            group.addTask {
                (try? await cancels.wait(for: id)) == nil ? nil : .cancelled
            }
            var outcome: Outcome?
            for await next in group {
                guard let next, outcome == nil else { continue }
                outcome = next
                group.cancelAll()
            }
            cancels.discard(id)
            return outcome ?? .ran(.failure(ComfyError.cancelled))
        }
    }

    /// When an async job's time to wait for a backend is over (`Configuration.queueTimeout`).
    private func queueDeadline(of record: JobRecord) -> ContinuousClock.Instant {
        .now + .seconds(record.createdAt.addingTimeInterval(configuration.queueTimeout.seconds).timeIntervalSinceNow)
    }

    /// Keeps a job back in `waiting` from the pool until a backend's health changes; one judged
    /// before the last change is not kept (its backend may be back: it is handed over again).
    private func park(_ record: JobRecord, judgedAt: UInt64) {
        guard pool.healthChanges() == judgedAt else { return }
        let deadline = queueDeadline(of: record)
        parked[record.id] = deadline
        // `watchParked` sleeps until the earliest end it knew of: this one may come sooner.
        if let wake = parkedWake, deadline < wake { pool.wakeParkedJobs() }
    }

    /// Hands the parked jobs to the pool again whenever a backend's health changes, and fails
    /// those whose queue time is over.
    private func watchParked() async {
        // The changes handled so far, across turns: one that comes while expired jobs are
        // written (its wake-up kept for the next wait) is handled in the next turn.
        var handled = pool.healthChanges()
        while !Task.isCancelled {
            let wake = parked.values.min() ?? .now + .seconds(3600)
            parkedWake = wake
            await pool.waitForBackendChange(until: wake)
            parkedWake = nil
            guard !Task.isCancelled else { return }
            let changes = pool.healthChanges()
            if changes != handled {
                handled = changes
                parked.removeAll()
                startWaiting()
                continue
            }
            let now = ContinuousClock.now
            for (id, deadline) in parked where deadline <= now {
                parked[id] = nil
                guard waiting.contains(where: { $0.id == id }) else { continue }
                waiting.removeAll { $0.id == id }
                // Fenced by this instance's lease (`finish`): one that lost the job writes nothing.
                let error = ComfyError(code: .backendUnavailable, message: "no ComfyUI backend that can run this job came back within its queue time")
                _ = try? await settle(id, status: .failed, result: nil, failure: describe(error), image: nil)
            }
        }
    }

    /// Whether the job failed only because this process stops (it must stay unfinished).
    private func isInterruption(_ error: any Error) -> Bool {
        if error is CancellationError { return true }
        guard stopping || Task.isCancelled, let code = (error as? ComfyError)?.code else { return false }
        return code == .cancelled || code == .backendUnavailable || code == .promptLost
    }

    private func submitted(_ id: String, promptID: String, backend: String) {
        live[id]?.promptID = promptID
        live[id]?.backend = backend
        if live[id]?.startedAt == nil { live[id]?.startedAt = Date() }
    }

    private func executionStarted(_ id: String) {
        live[id]?.executionStartedAt = .now
    }

    private func progressed(_ id: String, _ value: Double) {
        guard var state = live[id], value > state.progress else { return }
        state.progress = value
        for (key, watcher) in state.watchers {
            if case .terminated = watcher.yield(.progress(value)) { state.watchers.removeValue(forKey: key) }
        }
        live[id] = state
    }

    /// Records the job's end and tells its watchers; returns the final record.
    private func settle(
        _ id: String, status: JobStatus, result: JobResult?, failure: JobFailure?, image: [[UInt8]]?, usage: (gpuMilliseconds: Int?, imageBytes: Int)? = nil,
        releasingKey: Bool = false
    ) async throws -> JobRecord? {
        endedElsewhere.remove(id)
        let prompt = live[id]?.prompt
        do {
            let final = try await store.finish(
                id, status: status, result: result, failure: failure, gpuMilliseconds: usage?.gpuMilliseconds, imageBytes: usage?.imageBytes,
                releasingKey: releasingKey, at: Date()
            )
            // Watchers are taken after the write: one that joined while it ran is told too, and
            // one that comes later finds no live job and reads the final record.
            let watchers = live.removeValue(forKey: id)?.watchers.values.map { $0 } ?? []
            var record = final
            if record == nil, !watchers.isEmpty { record = try? await store.job(id) }
            for watcher in watchers {
                if let record { watcher.yield(.finished(record, image: image)) }
                watcher.finish()
            }
            // Stored by this instance: nobody needs the prompt's history any more. After the
            // watchers: a caller waiting for the answer does not wait for this too.
            if final != nil, let prompt { await pool.deleteHistory(prompt.id, backend: prompt.backend) }
            if final?.webhookURL != nil { webhookDue() }
            if let final, let key = final.keyName {
                Counter(label: "comfy_gateway_key_jobs_total", dimensions: [("key", key), ("outcome", final.status.rawValue)]).increment()
            }
            return final
        } catch let error as JobStoreError {
            if let shared {
                logger.error("a job's end could not be stored; the instance that takes it over settles it", metadata: ["job.id": "\(id)", "error": "\(error)"])
                shared.forget(id)
            } else {
                logger.error("a job's end could not be stored; written again until the store takes it", metadata: ["job.id": "\(id)", "error": "\(error)"])
                // The first end stays: a cancel that came after it is no end of its own.
                if unsettled[id] == nil {
                    unsettled[id] = Ending(status: status, result: result, failure: failure, usage: usage, releasingKey: releasingKey, prompt: prompt)
                }
            }
            endWatchers(of: id, with: .unstored(error))
            throw error
        }
    }

    /// The job ends here without a final record: its watchers hear why, and it is no longer live.
    private func endWatchers(of id: String, with update: JobUpdate) {
        for watcher in live.removeValue(forKey: id)?.watchers.values ?? [:].values {
            watcher.yield(update)
            watcher.finish()
        }
    }
}
