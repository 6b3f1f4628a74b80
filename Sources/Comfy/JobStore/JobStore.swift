import Foundation

/// Where jobs are kept so that none is lost when the gateway restarts: the embedded SQLite
/// store for one instance; the PostgreSQL one (`SharedJobStore`) for several.
///
/// Every call that changes a job is one atomic statement, so a crash leaves each job either
/// before or after the change, never between.
public protocol JobStore: Sendable {
    /// Stores a new job. A job with the same idempotency key stored within `keyWindow` is
    /// returned instead when its request hash is the same, else `idempotencyKeyReused`. With
    /// `unfinishedLimit`, a job of an API key that has that many queued or running already is
    /// refused (`unfinishedLimitReached`), counted and stored as one step, whoever else stores
    /// a job of the key at the same moment. A job of a revoked key is refused (`keyRevoked`) in
    /// the same step, so that none is stored after the revocation (`keys revoke --cancel`).
    func insert(_ job: JobRecord, requestHash: String?, keyWindow: Duration, unfinishedLimit: Int?) async throws -> JobInsertion

    func job(_ id: String) async throws -> JobRecord?

    /// The job's prompt is about to be submitted: it is `running` with this prompt on this
    /// backend (a queued job's first counts one more of its `processRuns`). Returns `false`
    /// when the job is final already (cancelled meanwhile).
    func markRunning(_ id: String, promptID: String, backend: String, at: Date) async throws -> Bool

    /// Ends a queued or running job, with what it used; its webhook, if it has one, becomes
    /// due. Returns the final record, or `nil` when the job had ended already (a job ends once).
    /// `releasingKey`: its idempotency key names it no more, in the same write (a retry under
    /// the key makes a new job).
    func finish(
        _ id: String, status: JobStatus, result: JobResult?, failure: JobFailure?, gpuMilliseconds: Int?, imageBytes: Int?, releasingKey: Bool, at: Date
    ) async throws -> JobRecord?

    /// The idempotency key no longer names this job (it never started: a retry makes a new one).
    func releaseIdempotencyKey(of id: String) async throws

    /// The job made within `window` before `now` that holds this (scoped) idempotency key, and
    /// the hash of the request that made it.
    func idempotentJob(_ key: String, within window: Duration, at now: Date) async throws -> (job: JobRecord, requestHash: String?)?

    /// Jobs not final yet, oldest first.
    func unfinished() async throws -> [JobRecord]

    /// What a start-up resumes: the jobs not final yet (shared, those whose lease ran out),
    /// oldest first. Each one running counts one more of its `processRuns`: this process runs
    /// it now, and the one before ended without ending it or handing it back.
    func takeUpUnfinished() async throws -> [JobRecord]

    /// This process stops and leaves its running jobs to the next (shared, to another instance
    /// at once): their `processRuns` count one less, as a stop is no crash.
    func handBack() async throws

    /// The process that left these jobs did not die of them (their prompts still waited in
    /// ComfyUI's queue; shared, it lives on and lost them): their `processRuns` count one less.
    func acquit(_ ids: [String]) async throws

    /// When the oldest queued or running job came in; `nil` when there is none.
    func oldestUnfinished() async throws -> Date?

    /// How many queued jobs are ahead of this one; `nil` unless it is queued.
    func queuePosition(of id: String) async throws -> Int?

    /// Jobs whose webhook is due at `now`, oldest first: the `connections` are dealt to the owners
    /// with webhooks due or being sent here in turn, one each round, those being sent first (they
    /// hold a connection). One tenant alone has every connection; one that needs fewer than an
    /// even share leaves the rest to the others; and tenants whose receivers hang hold about an
    /// even share, so the others' webhooks still go out (two hanging of three owners leave the
    /// third at least 2 of 8). The `excluded` jobs are neither returned nor dealt a connection
    /// (nor claimed): the sender holds them back.
    func dueWebhooks(at now: Date, limit: Int, connections: Int, excluding excluded: Set<String>) async throws -> [JobRecord]

    /// When the next pending webhook not due yet at `now` becomes due.
    func nextWebhookDue(after now: Date) async throws -> Date?

    /// Records one delivery attempt: delivered, due again at `nextAttemptAt`, or failed for good.
    func recordWebhookAttempt(of id: String, status: Int?, delivered: Bool, nextAttemptAt: Date?, at: Date) async throws

    /// Removes final jobs that ended before `date` and whose webhook is not pending; returns how many.
    func deleteFinished(before date: Date) async throws -> Int

    /// Jobs by status and webhooks by state, for `/metrics` and `/healthz`.
    func counts() async throws -> JobCounts

    /// The database's size on disk.
    func sizeInBytes() -> Int

    /// Closes the database; nothing is called after.
    func close() async

    // MARK: API keys

    /// Stores a new key under its secret's hash; throws `keyExists` for a name in use.
    func createKey(_ key: APIKey, hash: String) async throws

    /// Every key, revoked ones included, by name.
    func keys() async throws -> [APIKey]

    /// The key a secret's hash names, if it exists and is not revoked.
    func activeKey(hash: String) async throws -> APIKey?

    /// How many keys were ever made, revoked ones included: once one exists, keys are needed.
    func keyCount() async throws -> Int

    /// Revokes the key; returns whether it existed and was active.
    func revokeKey(named name: String, at: Date) async throws -> Bool

    /// The key's jobs that are queued or running.
    func unfinishedJobCount(key name: String) async throws -> Int

    /// What the key's jobs used.
    func usage(key name: String) async throws -> KeyUsage

    /// The key's jobs, newest first: at most `limit`, of `statuses` (any when empty), older
    /// than the job `before` (the last one of the page before). `nil` when `before` names no
    /// job of the key (another key's, or one removed since). Their workflows are not read.
    func jobs(ofKey name: String, statuses: [JobStatus], before: String?, limit: Int) async throws -> [JobRecord]?
}

extension JobStore {
    /// Ends a job that used nothing worth counting (it failed or was cancelled).
    public func finish(_ id: String, status: JobStatus, result: JobResult?, failure: JobFailure?, at date: Date) async throws -> JobRecord? {
        try await finish(id, status: status, result: result, failure: failure, gpuMilliseconds: nil, imageBytes: nil, releasingKey: false, at: date)
    }

    /// Whether a job made within `window` before `now` holds this (scoped) idempotency key.
    public func holdsIdempotencyKey(_ key: String, within window: Duration, at now: Date) async throws -> Bool {
        try await idempotentJob(key, within: window, at: now) != nil
    }

    /// Due webhooks with no share per owner.
    public func dueWebhooks(at now: Date, limit: Int) async throws -> [JobRecord] {
        try await dueWebhooks(at: now, limit: limit, connections: .max, excluding: [])
    }

    public func insert(_ job: JobRecord, requestHash: String?, keyWindow: Duration) async throws -> JobInsertion {
        try await insert(job, requestHash: requestHash, keyWindow: keyWindow, unfinishedLimit: nil)
    }
}

/// What `insert` did.
public enum JobInsertion: Sendable, Equatable {
    case created(JobRecord)
    /// The idempotency key named this job already (same request): nothing new was stored.
    case existing(JobRecord)

    public var record: JobRecord {
        switch self {
        case .created(let record), .existing(let record): record
        }
    }
}

public struct JobCounts: Sendable, Equatable {
    public var jobs: [JobStatus: Int]
    public var webhooks: [WebhookDelivery.State: Int]

    public init(jobs: [JobStatus: Int] = [:], webhooks: [WebhookDelivery.State: Int] = [:]) {
        self.jobs = jobs
        self.webhooks = webhooks
    }
}

/// Why the job store could not do what was asked.
public struct JobStoreError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The database cannot be written or read (disk full, read-only, I/O error).
        case unavailable
        /// The idempotency key names a job made from another request.
        case idempotencyKeyReused
        /// The database was made by a newer gateway: its schema is unknown here.
        case newerSchema
        /// A key with that name exists already.
        case keyExists
        /// The job's API key has as many jobs queued or running as it may.
        case unfinishedLimitReached
        /// The job's API key was revoked.
        case keyRevoked
    }

    public var kind: Kind
    public var message: String
    public var description: String { message }

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    static let keyRevoked = JobStoreError(.keyRevoked, "the API key is unknown or revoked")

    public static func unfinishedLimitReached(key name: String, limit: Int) -> JobStoreError {
        JobStoreError(.unfinishedLimitReached, "key \(name) has \(limit) jobs queued or running, its limit; try again when one ends")
    }
}
