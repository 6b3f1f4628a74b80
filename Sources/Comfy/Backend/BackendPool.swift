import Logging
import NIOConcurrencyHelpers

/// The ComfyUI servers behind the gateway and the scheduler in front of them: each job waits
/// in the gateway's queue for a slot on a healthy backend, runs there, and is moved to another
/// backend if that one fails (a bounded number of times; a job yields at most one result).
public final class BackendPool: Sendable {
    public let backends: [ComfyBackend]
    public let configuration: SchedulerConfiguration
    let dispatcher: JobDispatcher
    private let logger: Logger
    private let metrics: GatewayMetrics
    /// No backend up for this long: jobs are answered 503 instead of waiting.
    private let unavailableAfter: Duration
    /// Every instance's slots, when several share the backends (a shared job store).
    let ledger: (any BackendSlotLedger)?
    /// Every instance's view of the backends, when several share them.
    private let board: (any BackendHealthBoard)?
    /// Each backend's health as this instance finds it, and the backends others find down:
    /// the scheduler sees a backend up only when it is up here and nobody reports it down.
    private let healthViews: NIOLockedValueBox<(own: [BackendHealth], reported: [String: BackendReport])>

    public init(
        urls: [ComfyServerURL], http: CurlHTTPClient, configuration: SchedulerConfiguration = SchedulerConfiguration(),
        timing: BackendTiming = BackendTiming(), ledger: (any BackendSlotLedger)? = nil, board: (any BackendHealthBoard)? = nil,
        inputFolder: ComfyInputFolder? = nil, maxMessageBytes: Int = ComfyConnection.defaultMaxMessageBytes, leftoverMark: String? = nil,
        keepsWorkflowMetadata: Bool = false, logger: Logger
    ) {
        self.ledger = ledger
        self.board = board
        healthViews = NIOLockedValueBox((own: urls.map { _ in .down }, reported: [:]))
        backends = urls.map {
            ComfyBackend(
                url: $0, http: http, timing: timing, inputFolder: inputFolder, maxMessageBytes: maxMessageBytes, leftoverMark: leftoverMark,
                keepsWorkflowMetadata: keepsWorkflowMetadata, logger: logger
            )
        }
        self.configuration = configuration
        dispatcher = JobDispatcher(backendCount: urls.count, configuration: configuration)
        self.logger = logger
        metrics = GatewayMetrics(backends: urls.map(\.description))
        unavailableAfter = timing.unavailableAfter
    }

    /// Keeps every backend's WebSocket open and its health known until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for (index, backend) in backends.enumerated() {
                group.addTask { await backend.run() }
                group.addTask { await backend.watchHealth() }
                group.addTask { await backend.watchModels() }
                group.addTask {
                    // Which backends a job may run on changed: parked jobs are judged again.
                    for await _ in backend.modelChanges { await self.dispatcher.modelsChanged() }
                }
                group.addTask {
                    for await health in backend.healthChanges {
                        let was = self.healthViews.withLockedValue { views in
                            defer { views.own[index] = health }
                            return views.own[index]
                        }
                        await self.applyHealth(of: index)
                        // Only what this instance saw go wrong is reported, not a start still connecting.
                        if let board = self.board, was != health, was == .up || health == .up {
                            await board.report(backend: backend.url.description, down: health == .down, reason: health == .down ? backend.lastError : nil)
                        }
                    }
                }
            }
            if let board {
                group.addTask {
                    await board.followReports { reported in
                        self.healthViews.withLockedValue { $0.reported = reported }
                        for index in self.backends.indices { await self.applyHealth(of: index) }
                    }
                }
            }
            group.addTask {
                // Waiting is pointless when no backend a job may run on is coming back soon (all
                // are down, or the only ones with its models): say so once the grace is up.
                while !Task.isCancelled {
                    await self.dispatcher.failStranded(grace: self.unavailableAfter, with: self.strandedError)
                    let wake: ContinuousClock.Instant = await self.dispatcher.anyDown ? .now + self.unavailableAfter : .now + .seconds(3600)
                    await self.dispatcher.waitForHealthChange(until: wake)
                }
            }
        }
    }

    /// Gives the scheduler a backend's health: its own, unless another instance finds it down.
    private func applyHealth(of index: Int) async {
        let health = healthViews.withLockedValue { views in
            views.own[index] == .up && views.reported[backends[index].url.description] != nil ? BackendHealth.down : views.own[index]
        }
        metrics.backendHealth(index, health)
        await dispatcher.setHealth(index, health)
    }

    /// Takes no new jobs (they get a clear error); queued and running ones go on.
    public func stopAccepting() async {
        await dispatcher.stopAccepting()
    }

    /// Takes no new jobs and answers the queued ones with an error; running ones finish.
    public func shutDown() async {
        await dispatcher.shutDown()
    }

    /// Runs the job on a healthy backend when its turn comes, moving it if the backend fails.
    /// - Parameter owner: whose job it is (a session id, a caller's address): owners take turns.
    /// `job.events` is finished when the job ends, whatever the outcome.
    /// - Parameter ownerMaxRunning: the owner's prompts on the backends at once (an API key's cap).
    /// - Parameter acceptedBeforeDrain: the job was taken before the gateway began to stop (a
    ///   stored job): it still runs then; new work is refused.
    public func run(
        _ job: PromptJob, priority: JobPriority = .batch, owner: String = "", ownerMaxRunning: Int? = nil, acceptedBeforeDrain: Bool = false
    ) async throws -> GeneratedImage {
        defer { job.events?.finish() }
        let started = ContinuousClock.now
        let deadline = started + job.timeout
        do {
            let image = try await schedule(
                job, priority: priority, owner: owner, ownerMaxRunning: ownerMaxRunning, acceptedBeforeDrain: acceptedBeforeDrain, deadline: deadline
            )
            metrics.jobEnded(priority, outcome: "success", after: .now - started)
            return image
        } catch {
            // A stored job sent back to wait for its backend has not ended.
            if (error as? ComfyError)?.waitsForBackend == nil {
                metrics.jobEnded(priority, outcome: (error as? ComfyError).map { "\($0.code)" } ?? "error", after: .now - started)
            }
            throw error
        }
    }

    /// Takes up a job whose prompt an earlier process submitted to `backend`: its result if
    /// ComfyUI has it or still makes it, else the job runs again (`run`).
    ///
    /// The old prompt is in ComfyUI's queue already: it takes a slot at once, over the
    /// backend's capacity if need be, and new jobs wait for it.
    public func resume(
        _ job: PromptJob, promptID: String, backend url: String, priority: JobPriority = .batch, owner: String = "", ownerMaxRunning: Int? = nil
    ) async throws -> GeneratedImage {
        if let index = backends.firstIndex(where: { $0.url.description == url }) {
            let backend = backends[index]
            // A job taken over from another instance brings the slot its prompt holds in the
            // shared ledger; alone, the slot is this process's scheduler's.
            let adopted: BackendSlotTicket? = if let ledger, let jobID = job.jobID { await ledger.adoptSlot(of: jobID) } else { nil }
            let occupied: UInt64? = ledger == nil ? await dispatcher.occupy(owner: owner, backend: index) : nil
            let reattached: Result<GeneratedImage, any Error>
            do {
                reattached = .success(try await backend.reattach(job, promptID: promptID))
            } catch {
                reattached = .failure(error)
            }
            if let adopted { await ledger?.releaseSlot(adopted) }
            if let occupied { await dispatcher.finish(occupied) }
            switch reattached {
            case .success(let image):
                job.events?.finish()
                metrics.jobEnded(priority, outcome: "success", after: .zero)
                return image
            case .failure(let error as ComfyError) where error.isBackendFailure:
                logger.notice("a resumed job's prompt is gone; submitting the job again", metadata: ["comfy.backend": "\(url)", "error": "\(error)"])
            case .failure(let error):
                job.events?.finish()
                throw error
            }
        }
        // A stored job: it runs again even while the gateway drains.
        return try await run(job, priority: priority, owner: owner, ownerMaxRunning: ownerMaxRunning, acceptedBeforeDrain: true)
    }

    /// Removes a prompt nobody waits for from the backend it was submitted to.
    public func cancelPrompt(_ promptID: String, backend url: String) async {
        await backends.first(where: { $0.url.description == url })?.cancelPrompt(promptID)
    }

    /// The prompts waiting (not running) in each of these backends' queues; a backend that
    /// does not answer within a few seconds is left out.
    public func waitingPrompts(on urls: Set<String>) async -> [String: Set<String>] {
        var waiting: [String: Set<String>] = [:]
        for backend in backends where urls.contains(backend.url.description) {
            waiting[backend.url.description] = await backend.waitingPrompts()
        }
        return waiting
    }

    /// Removes a prompt that may have ended long ago: interrupted only if it is seen running.
    public func stopPrompt(_ promptID: String, backend url: String) async {
        await backends.first(where: { $0.url.description == url })?.stopPrompt(promptID)
    }

    /// Removes an ended prompt's history entry from the backend it ran on.
    public func deleteHistory(_ promptID: String, backend url: String) async {
        await backends.first(where: { $0.url.description == url })?.deleteHistory(promptID)
    }

    private func schedule(
        _ job: PromptJob, priority: JobPriority, owner: String, ownerMaxRunning: Int?, acceptedBeforeDrain: Bool, deadline: ContinuousClock.Instant
    ) async throws -> GeneratedImage {
        let models = ModelReference.models(in: job.workflow)
        if let missing = missingModels(models).first { throw modelNotFound(missing) }
        let eligible = eligibleBackends(for: models)
        if eligible?.isEmpty == true {
            throw ComfyError(
                code: .modelNotFound,
                message: "no ComfyUI backend has all the models this workflow names (each is on some backend, none has them together); /healthz lists each backend's models"
            )
        }
        // A stored job waits out an outage of every backend until its queue deadline; a caller on the line is told.
        // Read before the judgment: a change during it makes the job try again rather than wait.
        let judgedAt = healthChanges()
        if await dispatcher.isStranded(eligible, grace: unavailableAfter, outageDeadline: job.queueDeadline) {
            throw strandedError(eligible, withinQueueTime: job.queueDeadline.map { ContinuousClock.now < $0 } ?? false, judgedAt: judgedAt)
        }
        let id = try await dispatcher.submit(
            owner: owner, priority: priority, ownerMaxRunning: ownerMaxRunning, eligible: eligible,
            checkpoint: ModelReference.checkpoint(of: job.workflow), acceptedBeforeDrain: acceptedBeforeDrain,
            waitsOutOutagesUntil: job.queueDeadline
        )
        // A stored job's run is timed from when a backend first takes it; its wait for one ends
        // at its queue deadline, or as a caller's would, whichever is later.
        var deadline = deadline
        var hasStarted = job.queueDeadline == nil
        let waitStarted = ContinuousClock.now
        let timeoutError: @Sendable () -> any Error = { [self] in
            let health = dispatcher.published.withLockedValue(\.health)
            let reachable = health.indices.contains { (eligible?.contains($0) ?? true) && health[$0] == .up }
            return reachable
                ? ComfyError(code: .timedOut, message: "no ComfyUI backend was free within \((ContinuousClock.now - waitStarted).components.seconds) s")
                : unavailableError(eligible)
        }
        while true {
            let index = try await dispatcher.waitForSlot(
                id, deadline: hasStarted ? deadline : max(deadline, job.queueDeadline ?? deadline), timeoutError: timeoutError
            )
            if !hasStarted {
                hasStarted = true
                deadline = .now + job.timeout
            }
            let backend = backends[index]
            var attempt = job
            let ticket: BackendSlotTicket?
            do {
                ticket = try await ledger?.acquireSlot(
                    backend: backend.url.description, capacity: configuration.capacityPerBackend, job: job.jobID, priority: priority, owner: owner,
                    ownerMaxRunning: ownerMaxRunning, interactiveBurst: configuration.sharedInteractiveBurst, deadline: deadline
                )
            } catch {
                await dispatcher.finish(id)
                throw error is CancellationError ? ComfyError.cancelled : error
            }
            attempt.timeout = deadline - .now
            do {
                let image = try await backend.run(attempt)
                if let ticket { await ledger?.releaseSlot(ticket) }
                await dispatcher.finish(id)
                return image
            } catch let error as ComfyError where error.isBackendFailure && ContinuousClock.now < deadline {
                if let ticket { await ledger?.releaseSlot(ticket) }
                // The one place a job is tried again: on another backend if one is up, within its attempts.
                guard await dispatcher.retry(id) else { throw error }
                if error.code == .promptLost {
                    logger.notice("ComfyUI lost a prompt; submitting it again", metadata: ["comfy.backend": "\(backend.url)", "error": "\(error)"])
                } else {
                    logger.notice("job moves to another backend", metadata: ["comfy.backend": "\(backend.url)", "error": "\(error)"])
                    metrics.jobMoved()
                }
            } catch {
                if let ticket { await ledger?.releaseSlot(ticket) }
                await dispatcher.finish(id)
                throw error
            }
        }
    }

    /// The models of a workflow that no backend has, while every backend's list is known (a
    /// backend whose models are not read yet may have them: the job may wait for it).
    public func missingModels(_ models: [ModelReference]) -> [ModelReference] {
        let catalogues = backends.map(\.models)
        guard !models.isEmpty, catalogues.allSatisfy({ $0 != nil }) else { return [] }
        return models.filter { model in !catalogues.contains { $0!.has(model) } }
    }

    /// The backends a job may run on: those with every model it names, and those whose models
    /// are not known; `nil` when it names none.
    func eligibleBackends(for models: [ModelReference]) -> Set<Int>? {
        guard !models.isEmpty else { return nil }
        return Set(backends.indices.filter { index in
            guard let catalogue = backends[index].models else { return true }
            return models.allSatisfy(catalogue.has)
        })
    }

    /// The refusal of a workflow naming a model no backend has, before any GPU time is spent,
    /// with the models of that folder the backends do have.
    public func modelNotFound(_ model: ModelReference) -> ComfyError {
        var error = ComfyError(
            code: .modelNotFound,
            message: "no ComfyUI backend has the model \(model.name) (in models/\(model.folder)); /healthz lists each backend's models"
        )
        error.model = model
        let available = Set(backends.compactMap(\.models).flatMap { $0.folders[model.folder] ?? [] })
        error.availableModels = Array(available.sorted().prefix(100))
        return error
    }

    /// Why no backend can take a job that may run on `eligible` (`nil`: any), naming each of
    /// those with its last error.
    /// Why a job cannot run now; a stored job within its queue time is told to wait for one
    /// of its backends to come back (`ComfyError.waitsForBackend`).
    @Sendable private func strandedError(_ eligible: Set<Int>?, withinQueueTime: Bool) -> ComfyError {
        // Called by the dispatcher, whose state the published count is.
        strandedError(eligible, withinQueueTime: withinQueueTime, judgedAt: healthChanges())
    }

    private func strandedError(_ eligible: Set<Int>?, withinQueueTime: Bool, judgedAt: UInt64) -> ComfyError {
        var error = unavailableError(eligible)
        if withinQueueTime { error.waitsForBackend = judgedAt }
        return error
    }

    /// How many times a backend's health changed, as the scheduler saw it.
    public func healthChanges() -> UInt64 {
        dispatcher.published.withLockedValue(\.healthChanges)
    }

    /// Returns at `deadline`, or earlier when a backend's health changes or `wakeParkedJobs`
    /// is called: the one waiter for the runner's parked jobs.
    public func waitForBackendChange(until deadline: ContinuousClock.Instant) async {
        await dispatcher.waitForHealthChange(until: deadline, waiter: JobDispatcher.parkedJobs)
    }

    /// Ends the runner's `waitForBackendChange` early.
    public func wakeParkedJobs() {
        dispatcher.wakeHealthWaiter(JobDispatcher.parkedJobs)
    }

    @Sendable private func unavailableError(_ eligible: Set<Int>?) -> ComfyError {
        let named = backends.indices.filter { eligible?.contains($0) ?? true }.map { backends[$0] }
        let reasons = named.map { "\($0.url): \($0.lastError ?? "not connected")" }
        var error = ComfyError(code: .backendUnavailable, message: "no ComfyUI backend that can run this job is reachable (\(reasons.joined(separator: "; ")))")
        error.backend = named.map(\.url.description).joined(separator: ",")
        return error
    }

    /// Each backend's state for `/healthz`.
    public func status() -> [BackendStatus] {
        let snapshot = dispatcher.published.withLockedValue { $0 }
        return backends.enumerated().map { index, backend in
            BackendStatus(
                url: backend.url.description,
                health: snapshot.health[index],
                inFlight: snapshot.running[index],
                capacity: configuration.capacityPerBackend,
                lastError: backend.lastError,
                models: backend.models,
                reportedDown: healthViews.withLockedValue { $0.reported[backend.url.description] }
            )
        }
    }

    /// Jobs waiting for a backend (the queue-depth gauge is set from it at each scrape).
    public func queued() -> Int {
        let queued = dispatcher.published.withLockedValue { $0.queued }
        metrics.queueDepth(queued)
        return queued
    }
}

/// A backend's health as `/healthz` reports it.
public struct BackendStatus: Sendable, Equatable {
    public var url: String
    public var health: BackendHealth
    public var inFlight: Int
    public var capacity: Int
    public var lastError: String?
    /// `nil` until read, or from a ComfyUI that does not list its models.
    public var models: ModelCatalogue?
    /// Another instance finds it down (so it is down here too).
    public var reportedDown: BackendReport?
    public var isUp: Bool { health == .up }
}

extension ComfyError {
    /// The backend, not the job, failed: the job may run elsewhere.
    var isBackendFailure: Bool { code == .backendUnavailable || code == .badResponse || code == .promptLost }
}
