/// A job store several gateway instances share (PostgreSQL). Each instance holds a lease on
/// every unfinished job it runs and renews it; a job whose lease ran out (its instance died,
/// lost its network or was paused) is taken over by another instance. Each take-over raises
/// the job's lease generation, and a write by an instance holding an older one is refused
/// (fencing): a paused instance that wakes up cannot record a second result.
public protocol SharedJobStore: JobStore, BackendSlotLedger {
    /// This instance, as leases and slots name it.
    var instanceID: String { get }
    /// How long a lease lasts without renewal.
    var leaseTimeout: Duration { get }

    /// Renews this instance's leases (jobs and backend slots); returns the jobs it held that
    /// it no longer holds: taken over by another instance, or ended by one.
    func renewLeases() async throws -> [String]

    /// Takes over at most `limit` unfinished jobs whose lease ran out, oldest first, with the
    /// backend slots their prompts hold: this instance holds them now. Each one running counts
    /// one more of its `processRuns` (`takeUpUnfinished`). `handBack` lets leases run out at once.
    func takeOverExpired(limit: Int) async throws -> [JobRecord]

    /// Stops renewing the job's lease: its end could not be stored, so it runs out and an
    /// instance takes the job over (reattaching its prompt, whose result ComfyUI keeps).
    func forget(_ id: String)

    /// Stops renewing the claim on the job's webhook (`dueWebhooks`), which this instance
    /// will not send: it runs out, and an instance claims it again.
    func letWebhookGo(_ id: String)

    /// Until when this instance may still send the job's webhook: half a lease after its claim
    /// was last made or renewed (`renewLeases` renews it while the instance runs); `nil` when it
    /// holds no claim on it.
    func webhookClaimHeld(_ id: String) -> ContinuousClock.Instant?

    /// Tells the other instances how far a job is.
    func announceProgress(of id: String, _ progress: Double) async

    /// What the other instances did, as it happens: one stream per caller, ended when it stops.
    func changes() -> AsyncStream<JobStoreChange>

    /// Takes one submission from the key's rate, a bucket of `perMinute` that every instance
    /// spends from; `nil` when taken, else how long until one is there.
    func spend(rateOf key: String, perMinute: Int) async throws -> Duration?
}

/// Something another instance did to the shared store.
public enum JobStoreChange: Sendable, Equatable {
    /// The job's prompt was submitted.
    case running(String)
    case progress(String, Double)
    /// The job ended (or was cancelled there).
    case ended(String)
    /// A slot on the backend became free.
    case slotFreed(String)
    /// An instance found a backend down, or no longer.
    case backendReported
    /// Notifications may have been missed (the listening connection was re-made): read again.
    case resync
}
