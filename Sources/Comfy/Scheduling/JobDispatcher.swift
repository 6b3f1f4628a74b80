import NIOConcurrencyHelpers

/// The seam between callers and the scheduler: a job waits here for a backend slot, within
/// its deadline, and gives the slot back when it ends.
actor JobDispatcher {
    private var scheduler: JobScheduler
    /// Jobs waiting for their backend, by job id; an assignment made while its job was not
    /// waiting yet (right after a retry) is kept for it.
    private let slots = WaiterTable<UInt64, Int>()
    private var nextID: UInt64 = 0
    /// No new jobs (`stopAccepting`); those accepted before go on.
    private var isDraining = false
    /// Nothing more starts (`shutDown`).
    private var isShutDown = false
    private var isShuttingDown: Bool { isDraining || isShutDown }
    /// Since when each backend has not been up (`nil` while it is).
    private var downSince: [ContinuousClock.Instant?]
    /// Wakes `waitForHealthChange` callers.
    private let healthChanges = WaiterTable<Int, Void>()
    /// How many times a backend's health changed (`Snapshot.healthChanges`).
    private var healthChangeCount: UInt64 = 0
    /// Stored jobs' `queueDeadline`s, by job id: until then one waits out an outage of every
    /// backend instead of being failed as stranded (`isStranded`).
    private var outageDeadlines: [UInt64: ContinuousClock.Instant] = [:]
    init(backendCount: Int, configuration: SchedulerConfiguration) {
        scheduler = JobScheduler(backendCount: backendCount, configuration: configuration)
        downSince = Array(repeating: .now, count: backendCount)
        published = NIOLockedValueBox(
            Snapshot(health: scheduler.backends.map(\.health), running: scheduler.backends.map(\.running.count), queued: 0, healthChanges: 0)
        )
    }

    /// The scheduler's counts as of its last change, for `/healthz` and `/metrics`: read
    /// without a hop onto this actor.
    struct Snapshot: Sendable {
        var health: [BackendHealth]
        var running: [Int]
        var queued: Int
        /// How many times a backend's health changed: a job judged stranded at one count may
        /// run at a later one.
        var healthChanges: UInt64
    }

    // A pthread mutex, not `Mutex`: many FastCGI threads read it at once, and `Mutex` spins under contention (perf).
    nonisolated let published: NIOLockedValueBox<Snapshot>

    /// Queues a job; throws `busy` when the queue is full, and refuses it once the gateway is
    /// shutting down unless it was `acceptedBeforeDrain` (a stored job already in flight).
    /// - Parameter waitsOutOutagesUntil: a stored job's `queueDeadline` (`failStranded`).
    func submit(
        owner: String, priority: JobPriority, ownerMaxRunning: Int? = nil, eligible: Set<Int>? = nil, checkpoint: String? = nil,
        acceptedBeforeDrain: Bool = false, waitsOutOutagesUntil: ContinuousClock.Instant? = nil
    ) throws -> UInt64 {
        guard !isShutDown, !isDraining || acceptedBeforeDrain else {
            throw ComfyError(code: .backendUnavailable, message: "the gateway is shutting down")
        }
        nextID += 1
        if case .busy(let queued) = scheduler.submit(nextID, owner: owner, priority: priority, ownerMaxRunning: ownerMaxRunning, eligible: eligible, checkpoint: checkpoint) {
            throw ComfyError(code: .busy, message: "the service is busy: \(queued) jobs are waiting; try again shortly")
        }
        outageDeadlines[nextID] = waitsOutOutagesUntil
        pump()
        return nextID
    }

    /// Counts a prompt already on `backend` (taken up after a restart) as running there until
    /// `finish`, so that new jobs do not overfill it meanwhile.
    func occupy(owner: String, backend: Int) -> UInt64 {
        nextID += 1
        scheduler.occupy(nextID, owner: owner, on: backend)
        pump()
        return nextID
    }

    /// Waits for the job's backend slot until `deadline`, past which `timeoutError()` is thrown;
    /// a timeout or cancellation removes it.
    func waitForSlot(_ id: UInt64, deadline: ContinuousClock.Instant, timeoutError: @escaping @Sendable () -> any Error) async throws -> Int {
        let slots = self.slots
        do {
            // Given at once (a backend was free): no wait, and no deadline task and timer for it.
            if let given = slots.takeKept(id) { return try given.get() }
            return try await withDeadline(deadline, timeout: timeoutError) {
                try await slots.wait(for: id)
            }
        } catch {
            // Gone from the queue, or from the backend it was just given.
            end(id)
            pump()
            throw error is CancellationError ? ComfyError.cancelled : error
        }
    }

    /// The job ended: its slot goes to the next one.
    func finish(_ id: UInt64) {
        end(id)
        pump()
    }

    /// The job's backend failed it; returns whether it may run again elsewhere.
    func retry(_ id: UInt64) -> Bool {
        let again = scheduler.retry(id)
        // Out of attempts, the scheduler forgot it already; what was kept for it goes too.
        if !again || isShuttingDown { end(id) }
        pump()
        return again && !isShuttingDown
    }

    /// Takes the job out of the scheduler (waiting or running) and forgets what was kept for it.
    private func end(_ id: UInt64) {
        scheduler.finish(id)
        slots.discard(id)
        outageDeadlines[id] = nil
    }

    func setHealth(_ backend: Int, _ health: BackendHealth) {
        guard scheduler.backends[backend].health != health else { return }
        scheduler.setHealth(backend, isShuttingDown && health == .up ? .draining : health)
        if health == .up {
            downSince[backend] = nil
        } else if downSince[backend] == nil {
            downSince[backend] = .now
        }
        healthChanged()
    }

    /// A backend's models changed: a job stranded for want of them may run now.
    func modelsChanged() {
        healthChanged()
    }

    /// Counts a change of what jobs can run where, publishes it, then wakes its waiters (they
    /// read it): the pool's stranded-job check and the runner's parked jobs.
    private func healthChanged() {
        healthChangeCount += 1
        pump()
        for waiter in [Self.strandedCheck, Self.parkedJobs] { healthChanges.resume(waiter, with: .success(())) }
    }

    /// Whether every backend of `eligible` (`nil`: any backend) has not been up for `grace`:
    /// a job that may run only there would wait for nothing. A stored job before its
    /// `outageDeadline` is not, while no backend at all is up (a ComfyUI restarting): nothing
    /// else runs meanwhile either. While another backend is up it is, as a caller's job is:
    /// jobs waiting for one backend of several (or for a model none has) would otherwise hold
    /// the runner's places for async jobs (`maxRunningAsync`) from every other job.
    func isStranded(
        _ eligible: Set<Int>?, grace: Duration, outageDeadline: ContinuousClock.Instant? = nil, now: ContinuousClock.Instant = .now
    ) -> Bool {
        if let outageDeadline, now < outageDeadline, downSince.allSatisfy({ $0 != nil }) { return false }
        let backends = eligible.map { Array($0) } ?? Array(downSince.indices)
        return backends.allSatisfy { index in downSince[index].map { now - $0 >= grace } ?? false }
    }

    /// Whether a backend is not up now (then the stranded jobs are looked for every `grace`).
    var anyDown: Bool { downSince.contains { $0 != nil } }

    /// Returns at `deadline`, or earlier when a backend's health changes.
    nonisolated func waitForHealthChange(until deadline: ContinuousClock.Instant, waiter: Int = strandedCheck) async {
        _ = await healthChanges.wait(for: waiter, until: deadline)
    }

    /// Wakes a `waitForHealthChange` caller early (its deadline changed).
    nonisolated func wakeHealthWaiter(_ waiter: Int) {
        healthChanges.resume(waiter, with: .success(()))
    }

    /// The two callers of `waitForHealthChange`, one each.
    static let strandedCheck = 0
    static let parkedJobs = 1


    /// Answers each waiting job that `isStranded` with the error for its backends (none it may
    /// run on is coming back soon), told whether it is a stored job within its queue time.
    func failStranded(grace: Duration, with error: @Sendable (Set<Int>?, _ withinQueueTime: Bool) -> any Error) {
        let now = ContinuousClock.now
        for id in scheduler.waitingJobs {
            let eligible = scheduler.eligibleBackends(of: id)
            if isStranded(eligible, grace: grace, outageDeadline: outageDeadlines[id], now: now) {
                abandon(id, with: error(eligible, outageDeadlines[id].map { now < $0 } ?? false))
            }
        }
        pump()
    }

    /// Takes no new jobs; those queued and running go on, and so do jobs accepted before.
    func stopAccepting() {
        isDraining = true
    }

    /// Takes no new jobs and answers the waiting ones; running ones finish.
    func shutDown() {
        isShutDown = true
        for backend in scheduler.backends.indices { scheduler.setHealth(backend, .draining) }
        defer { pump() }
        for id in scheduler.waitingJobs {
            abandon(id, with: ComfyError(code: .backendUnavailable, message: "the gateway is shutting down; the job was not started"))
        }
    }

    /// Takes a job off the queue and answers it with `error`, kept for it if its wait has not
    /// begun yet (its caller is between `submit` or a retry and `waitForSlot`).
    private func abandon(_ id: UInt64, with error: Error) {
        end(id)
        slots.resume(id, with: .failure(error))
    }

    private func pump() {
        for assignment in scheduler.dispatch() {
            slots.resume(assignment.job, with: .success(assignment.backend))
        }
        let snapshot = Snapshot(
            health: scheduler.backends.map(\.health), running: scheduler.backends.map(\.running.count), queued: scheduler.queued, healthChanges: healthChangeCount
        )
        published.withLockedValue { $0 = snapshot }
    }
}
