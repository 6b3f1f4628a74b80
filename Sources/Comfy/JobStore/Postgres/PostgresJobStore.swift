import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOSSL
import PostgresNIO

/// The shared job store: one PostgreSQL database for every gateway instance (`JOB_STORE`).
///
/// The calls are those of the SQLite store, each one statement; what several instances add
/// (leases, take-over, fencing, backend slots, notifications) is in the extensions.
public final class PostgresJobStore: SharedJobStore {
    public let instanceID: String
    public let leaseTimeout: Duration
    let client: PostgresClient
    let logger: Logger
    /// The lease generation of each job this instance holds: its writes carry it (fencing).
    let held = NIOLockedValueBox<[String: Int]>([:])
    /// Listeners of `changes()`.
    let listeners = NIOLockedValueBox<[UInt64: AsyncStream<JobStoreChange>.Continuation]>([:])
    let nextListener = NIOLockedValueBox<UInt64>(0)
    /// Backends whose slot rows exist at this capacity.
    let preparedSlots = NIOLockedValueBox<[String: Int]>([:])
    /// This instance's rows of `slot_waiters`, and the tickets of the slots it holds: only
    /// these are renewed, so a row written by a call it gave up on (past its deadline) runs out.
    let waiters = NIOLockedValueBox<Set<String>>([])
    let slotTickets = NIOLockedValueBox<Set<String>>([])
    /// The jobs whose webhooks this instance claimed and is sending (their claims are renewed),
    /// and when each claim was last made or renewed, as this process's clock read before the
    /// statement: the claim holds until at least a lease after that.
    let webhookClaims = NIOLockedValueBox<[String: ContinuousClock.Instant]>([:])
    /// `gateway_secrets`, as read at open.
    let secrets = NIOLockedValueBox<[String: [UInt8]]>([:])
    private let lastSize = NIOLockedValueBox<Int>(0)
    /// The client's connections and the listening connection, until `close()`.
    private let background = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// The build of the indexes made after the start (`buildConcurrentIndexes`), until `close()`.
    private let indexing = NIOLockedValueBox<Task<Void, Never>?>(nil)

    static let channel = "comfy_gateway"

    private init(client: PostgresClient, leaseTimeout: Duration, logger: Logger) {
        instanceID = RandomSecret.bytes(9).base64URL
        self.client = client
        self.leaseTimeout = leaseTimeout
        self.logger = logger
    }

    /// Connects, and brings the schema up to date under an advisory lock.
    public static func open(url: PostgresStoreURL, leaseTimeout: Duration = .seconds(15), logger: Logger) async throws -> PostgresJobStore {
        try await open(url: url, leaseTimeout: leaseTimeout, logger: logger, upTo: PostgresJobStoreSchema.latestVersion)
    }

    static func open(url: PostgresStoreURL, leaseTimeout: Duration, logger: Logger, upTo version: Int) async throws -> PostgresJobStore {
        var clientTLS: TLSConfiguration?
        let tls: PostgresClient.Configuration.TLS
        switch url.tls {
        case .disable: tls = .disable
        case .prefer, .require:
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            clientTLS = configuration
            tls = url.tls == .prefer ? .prefer(configuration) : .require(configuration)
        case .verifyFull:
            clientTLS = .makeClientConfiguration()
            tls = .require(.makeClientConfiguration())
        }
        let deadline = ContinuousClock.now + .seconds(30)
        try await probe(url, tls: clientTLS, deadline: deadline, logger: logger)
        var configuration = PostgresClient.Configuration(
            host: url.host, port: url.port, username: url.username, password: url.password, database: url.database, tls: tls
        )
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.maximumConnections = 16
        // The pool logs each failed connection attempt at info: an outage would flood the log.
        var background = logger
        background.logLevel = max(logger.logLevel, .warning)
        let client = PostgresClient(configuration: configuration, backgroundLogger: background)
        let store = PostgresJobStore(client: client, leaseTimeout: leaseTimeout, logger: logger)
        store.background.withLockedValue { task in
            task = Task {
                await withDiscardingTaskGroup { group in
                    group.addTask { await client.run() }
                    group.addTask { await store.listen() }
                }
            }
        }
        // The pool's run loop starts on another thread; a lease asked before it runs only waits,
        // but the client warns of it.
        try? await Task.sleep(for: .milliseconds(10))
        do {
            try await withDeadline(deadline, timeout: { JobStoreError(.unavailable, "cannot reach the job database \(url) within 30 s") }) {
                try await store.prepare(upTo: version)
                if version >= 4 { try await store.loadSecrets() }
            }
        } catch {
            await store.close()
            if let error = error as? JobStoreError { throw error }
            throw JobStoreError(.unavailable, "cannot open the job database \(url): \(Self.reason(error))")
        }
        if version == PostgresJobStoreSchema.latestVersion {
            store.indexing.withLockedValue { $0 = Task { await store.buildConcurrentIndexes() } }
        }
        return store
    }

    public func close() async {
        if let task = indexing.withLockedValue({ $0 }) {
            task.cancel()
            await task.value
        }
        if let task = background.withLockedValue({ $0 }) {
            task.cancel()
            await task.value
        }
        listeners.withLockedValue { listeners in
            for listener in listeners.values { listener.finish() }
            listeners = [:]
        }
    }

    /// Applies the migrations this database lacks, one instance at a time.
    private func prepare(upTo target: Int) async throws {
        try await client.withConnection { connection in
            _ = try await connection.query("SELECT pg_advisory_lock(\(PostgresJobStoreSchema.migrationLock))", logger: logger)
            do {
                _ = try await connection.query("CREATE TABLE IF NOT EXISTS gateway_schema (version INTEGER NOT NULL)", logger: logger)
                var version = 0
                for try await (value) in try await connection.query("SELECT version FROM gateway_schema", logger: logger).decode(Int.self) {
                    version = value
                }
                let latest = PostgresJobStoreSchema.latestVersion
                guard version <= latest else {
                    throw JobStoreError(.newerSchema, "the job database has schema version \(version), newer than this gateway's \(latest): run the newer gateway")
                }
                if version < target {
                    try await connection.withTransaction(logger: logger) { connection in
                        try await self.startTransaction(on: connection, serializedBy: "migration")
                        for next in (version + 1)...target {
                            for statement in PostgresJobStoreSchema.migrations[next - 1] {
                                _ = try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                            }
                        }
                        _ = try await connection.query("DELETE FROM gateway_schema", logger: logger)
                        _ = try await connection.query("INSERT INTO gateway_schema (version) VALUES (\(target))", logger: logger)
                    }
                    logger.notice("migrated the job database", metadata: ["job_store.from": "\(version)", "job_store.to": "\(target)"])
                }
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(PostgresJobStoreSchema.migrationLock))", logger: logger)
                throw error
            }
            _ = try await connection.query("SELECT pg_advisory_unlock(\(PostgresJobStoreSchema.migrationLock))", logger: logger)
        }
    }

    /// The schema version the database records.
    func schemaVersion() async throws -> Int {
        try await rows("SELECT version FROM gateway_schema").first?.integer("version") ?? 0
    }

    // MARK: JobStore

    public func insert(_ job: JobRecord, requestHash: String?, keyWindow: Duration, unfinishedLimit: Int?) async throws -> JobInsertion {
        try await guarded {
            if let key = job.idempotencyKey {
                let expired = job.createdAt.addingTimeInterval(-keyWindow.seconds).milliseconds
                try await execute("UPDATE jobs SET idempotency_key = NULL WHERE idempotency_key = \(key) AND created_at < \(expired)")
            }
            let limit = job.keyName == nil ? nil : unfinishedLimit
            let insert: PostgresQuery = """
                INSERT INTO jobs (id, kind, status, workflow, output_node_id, owner, webhook_url, idempotency_key, request_hash, created_at,
                    key_name, output_format, lease_owner, lease_until)
                SELECT \(job.id), \(job.kind.rawValue), \(job.status.rawValue), \(JSONValue.object(job.workflow).encodedText), \(job.outputNodeID),
                    \(job.owner), \(job.webhookURL), \(job.idempotencyKey), \(requestHash), \(job.createdAt.milliseconds), \(job.keyName),
                    \(job.storedOutputFormat), \(instanceID), gateway_now_ms() + \(leaseTimeout.milliseconds)
                WHERE (\(limit)::BIGINT IS NULL
                    OR (SELECT COUNT(*) FROM jobs WHERE key_name = \(job.keyName) AND status IN ('queued', 'running')) < \(limit)::BIGINT)
                    AND NOT EXISTS (SELECT 1 FROM api_keys WHERE name = \(job.keyName) AND revoked_at IS NOT NULL)
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING lease_generation
                """
            // A limited key's inserts take turns: each counts the jobs the one before stored.
            // Bounded: a caller told "nothing was stored" must not find the job run anyway.
            let inserted = try await rows(insert, serializedBy: limit.map { _ in "unfinished \(job.keyName ?? "")" }, bounded: true)
            if let generation = inserted.first?.integer("lease_generation") {
                held.withLockedValue { $0[job.id] = generation }
                return .created(job)
            }
            guard let key = job.idempotencyKey, let row = try await rows("SELECT * FROM jobs WHERE idempotency_key = \(key)").first else {
                if let name = job.keyName, try await !rows("SELECT 1 FROM api_keys WHERE name = \(name) AND revoked_at IS NOT NULL").isEmpty {
                    throw JobStoreError.keyRevoked
                }
                if let limit, let name = job.keyName { throw JobStoreError.unfinishedLimitReached(key: name, limit: limit) }
                throw JobStoreError(.unavailable, "the job was not stored")
            }
            guard row.text("request_hash") == requestHash else {
                throw JobStoreError(.idempotencyKeyReused, "this Idempotency-Key was used for another request within 24 h; use a new key for a new request")
            }
            return .existing(JobRecord(row: row))
        }
    }

    public func job(_ id: String) async throws -> JobRecord? {
        try await guarded { try await rows("SELECT * FROM jobs WHERE id = \(id)").first.map(JobRecord.init(row:)) }
    }

    /// Only the instance holding the job's lease, at its generation, may submit its prompt; the
    /// lease is renewed with it, so that the prompt is sent well within it.
    public func markRunning(_ id: String, promptID: String, backend: String, at date: Date) async throws -> Bool {
        guard let generation = generation(of: id) else { return false }
        return try await guarded {
            let updated = try await rows(
                """
                UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, \(date.milliseconds)), prompt_id = \(promptID),
                    backend = \(backend), attempts = attempts + 1, lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds),
                    process_runs = process_runs + CASE WHEN status = 'queued' THEN 1 ELSE 0 END
                WHERE id = \(id) AND status IN ('queued', 'running') AND lease_owner = \(instanceID) AND lease_generation = \(generation)
                RETURNING id, pg_notify(\(Self.channel), \("running \(instanceID) \(id)"))::text AS notified
                """
            )
            return !updated.isEmpty
        }
    }

    /// A job this instance holds ends only at its generation; one it does not hold (cancelled
    /// through another instance, or one it took over to cancel) ends whoever ran it.
    public func finish(
        _ id: String, status: JobStatus, result: JobResult?, failure: JobFailure?, gpuMilliseconds: Int?, imageBytes: Int?, releasingKey: Bool,
        at date: Date
    ) async throws -> JobRecord? {
        let generation = held.withLockedValue { $0.removeValue(forKey: id) }
        return try await guarded {
            try await rows(
                """
                WITH ended AS (
                    UPDATE jobs SET status = \(status.rawValue), finished_at = \(date.milliseconds), result = \(result?.storedText),
                        error = \(failure?.storedText), gpu_ms = \(gpuMilliseconds), image_bytes = \(imageBytes),
                        progress = CASE WHEN \(status.rawValue) = 'completed' THEN 1 ELSE progress END,
                        idempotency_key = CASE WHEN \(releasingKey) THEN NULL ELSE idempotency_key END,
                        webhook_state = CASE WHEN webhook_url IS NULL THEN 'none' ELSE 'pending' END,
                        webhook_next_at = CASE WHEN webhook_url IS NULL THEN NULL ELSE gateway_now_ms() END,
                        lease_owner = NULL, lease_until = NULL
                    WHERE id = \(id) AND status IN ('queued', 'running')
                        AND (\(generation)::bigint IS NULL OR (lease_owner = \(instanceID) AND lease_generation = \(generation)))
                    RETURNING \(unescaped: JobRecord.columnsWithoutWorkflow)
                )
                SELECT ended.*, pg_notify(\(Self.channel), 'ended ' || \(instanceID) || ' ' || ended.id)::text AS notified FROM ended
                """
            ).first.map(JobRecord.init(row:))
        }
    }

    public func idempotentJob(_ key: String, within window: Duration, at now: Date) async throws -> (job: JobRecord, requestHash: String?)? {
        let since = now.addingTimeInterval(-window.seconds).milliseconds
        return try await guarded {
            try await rows("SELECT * FROM jobs WHERE idempotency_key = \(key) AND created_at >= \(since) LIMIT 1").first.map {
                (JobRecord(row: $0), $0.text("request_hash"))
            }
        }
    }

    public func releaseIdempotencyKey(of id: String) async throws {
        try await guarded { try await execute("UPDATE jobs SET idempotency_key = NULL WHERE id = \(id)") }
    }

    /// The unfinished jobs of every instance: a shared store's start-up takes over only
    /// expired ones (`takeOverExpired`), so this is for inspection.
    public func unfinished() async throws -> [JobRecord] {
        try await guarded { try await rows("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY seq").map(JobRecord.init(row:)) }
    }

    public func oldestUnfinished() async throws -> Date? {
        try await guarded {
            try await rows("SELECT MIN(created_at) AS oldest FROM jobs WHERE status IN ('queued', 'running')").first?.date("oldest")
        }
    }

    public func queuePosition(of id: String) async throws -> Int? {
        try await guarded {
            try await rows(
                """
                SELECT (SELECT COUNT(*) FROM jobs AS ahead WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) AS position
                FROM jobs WHERE id = \(id) AND status = 'queued'
                """
            ).first?.integer("position")
        }
    }

    /// Claims the due webhooks for this instance for a lease, renewed while each is sent
    /// (`renewLeases`): no other instance sends one meanwhile, and one whose sender died or
    /// was held up past its lease is claimed again. Webhook times are the database's clock,
    /// as the leases (`now` is this instance's: not used here), so that an instance whose
    /// clock is ahead does not take a claim another still holds.
    /// Those this instance is sending (claimed, the claim not run out) count toward an owner's
    /// share of its connections.
    public func dueWebhooks(at now: Date, limit: Int, connections: Int, excluding excluded: Set<String>) async throws -> [JobRecord] {
        let excludedIDs = excluded.sorted()
        let asked = ContinuousClock.now
        return try await guarded {
            let claimed = try await rows(
                """
                UPDATE jobs SET webhook_next_at = gateway_now_ms() + \(leaseTimeout.milliseconds), webhook_claimed_by = \(instanceID)
                WHERE seq IN (
                    SELECT seq FROM jobs WHERE seq IN (
                        SELECT seq FROM (
                            SELECT seq, due, ROW_NUMBER() OVER (ORDER BY turn, due, webhook_next_at, seq) AS place FROM (
                                SELECT seq, webhook_next_at, webhook_next_at <= gateway_now_ms() AS due,
                                    ROW_NUMBER() OVER (PARTITION BY owner ORDER BY webhook_next_at > gateway_now_ms() DESC, webhook_next_at, seq) AS turn
                                FROM jobs WHERE webhook_state = 'pending' AND NOT (id = ANY(\(excludedIDs)))
                                    AND (webhook_next_at <= gateway_now_ms() OR webhook_claimed_by = \(instanceID))
                            ) AS ranked
                        ) AS dealt WHERE due AND place <= \(connections)::BIGINT
                    )
                    -- Checked again on the row as locked: one another instance claimed after this
                    -- statement's snapshot is no longer due.
                    AND webhook_state = 'pending' AND webhook_next_at <= gateway_now_ms()
                    ORDER BY webhook_next_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
                )
                RETURNING *
                """
            ).map(JobRecord.init(row:))
            webhookClaims.withLockedValue { claims in
                for record in claimed { claims[record.id] = asked }
            }
            return claimed
        }
    }

    /// On this instance's clock: how long until the next one is due on the database's, from `now`.
    public func nextWebhookDue(after now: Date) async throws -> Date? {
        try await guarded {
            let wait = try await rows(
                "SELECT MIN(webhook_next_at) - gateway_now_ms() AS wait FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at > gateway_now_ms()"
            ).first?.integer("wait")
            return wait.map { now.addingTimeInterval(Double($0) / 1000) }
        }
    }

    /// Recorded only while this instance holds the claim: one that lost it while held up sent
    /// a delivery that the instance which claimed it next sends again (webhooks are delivered
    /// at least once, with one `webhook-id`).
    public func recordWebhookAttempt(of id: String, status: Int?, delivered: Bool, nextAttemptAt: Date?, at date: Date) async throws {
        defer { letWebhookGo(id) }
        let state: WebhookDelivery.State = delivered ? .delivered : nextAttemptAt == nil ? .failed : .pending
        let deliveredAt: Int? = delivered ? date.milliseconds : nil
        // The pause is this instance's to choose; when it ends, the database's clock says.
        let pause: Int? = nextAttemptAt.map { max(0, $0.milliseconds - date.milliseconds) }
        try await guarded {
            try await execute(
                """
                UPDATE jobs SET webhook_state = \(state.rawValue), webhook_attempts = webhook_attempts + 1, webhook_last_status = \(status),
                    webhook_delivered_at = \(deliveredAt), webhook_next_at = gateway_now_ms() + \(pause)::BIGINT, webhook_claimed_by = NULL
                WHERE id = \(id) AND webhook_state = 'pending' AND webhook_claimed_by = \(instanceID)
                """
            )
        }
    }

    public func letWebhookGo(_ id: String) {
        _ = webhookClaims.withLockedValue { $0.removeValue(forKey: id) }
    }

    public func webhookClaimHeld(_ id: String) -> ContinuousClock.Instant? {
        webhookClaims.withLockedValue { $0[id] }.map { $0 + leaseTimeout / 2 }
    }

    /// Drawing sessions untouched as long go with them.
    public func deleteFinished(before date: Date) async throws -> Int {
        try await guarded {
            try await execute("DELETE FROM drawing_sessions WHERE updated_at < \(date.milliseconds)")
            return try await rows(
                """
                DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < \(date.milliseconds)
                    AND webhook_state != 'pending' RETURNING seq
                """
            ).count
        }
    }

    public func counts() async throws -> JobCounts {
        try await guarded {
            var counts = JobCounts()
            for row in try await rows("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status") {
                if let status = row.text("status").flatMap(JobStatus.init(rawValue:)) { counts.jobs[status] = row.integer("n") ?? 0 }
            }
            for row in try await rows("SELECT webhook_state, COUNT(*) AS n FROM jobs GROUP BY webhook_state") {
                if let state = row.text("webhook_state").flatMap(WebhookDelivery.State.init(rawValue:)) { counts.webhooks[state] = row.integer("n") ?? 0 }
            }
            // The size is read with the counts (they are cached for a second by JobStoreStats).
            if let size = try await rows("SELECT pg_total_relation_size('jobs') AS size").first?.integer("size") {
                lastSize.withLockedValue { $0 = size }
            }
            return counts
        }
    }

    /// The jobs table's size as of the last `counts()`.
    public func sizeInBytes() -> Int { lastSize.withLockedValue { $0 } }

    // MARK: API keys

    public func createKey(_ key: APIKey, hash: String) async throws {
        try await guarded {
            let created = try await rows(
                """
                INSERT INTO api_keys (name, hash, max_running, max_queued, rate_per_minute, created_at)
                VALUES (\(key.name), \(hash), \(key.maxRunning), \(key.maxQueued), \(key.ratePerMinute), \(key.createdAt.milliseconds))
                ON CONFLICT DO NOTHING RETURNING name
                """
            )
            guard !created.isEmpty else { throw JobStoreError(.keyExists, "a key named \(key.name) exists already (revoke it, or pick another name)") }
        }
    }

    public func keys() async throws -> [APIKey] {
        try await guarded { try await rows("SELECT * FROM api_keys ORDER BY name").map(APIKey.init(row:)) }
    }

    public func activeKey(hash: String) async throws -> APIKey? {
        try await guarded { try await rows("SELECT * FROM api_keys WHERE hash = \(hash) AND revoked_at IS NULL").first.map(APIKey.init(row:)) }
    }

    public func keyCount() async throws -> Int {
        try await guarded { try await rows("SELECT COUNT(*) AS n FROM api_keys").first?.integer("n") ?? 0 }
    }

    public func revokeKey(named name: String, at date: Date) async throws -> Bool {
        try await guarded {
            !(try await rows("UPDATE api_keys SET revoked_at = \(date.milliseconds) WHERE name = \(name) AND revoked_at IS NULL RETURNING name").isEmpty)
        }
    }

    public func unfinishedJobCount(key name: String) async throws -> Int {
        try await guarded {
            try await rows("SELECT COUNT(*) AS n FROM jobs WHERE key_name = \(name) AND status IN ('queued', 'running')").first?.integer("n") ?? 0
        }
    }

    public func usage(key name: String) async throws -> KeyUsage {
        try await guarded {
            var usage = KeyUsage()
            for row in try await rows(
                "SELECT status, COUNT(*) AS n, SUM(gpu_ms)::bigint AS gpu, SUM(image_bytes)::bigint AS bytes FROM jobs WHERE key_name = \(name) GROUP BY status"
            ) {
                guard let status = row.text("status").flatMap(JobStatus.init(rawValue:)) else { continue }
                usage.jobs[status] = row.integer("n") ?? 0
                usage.gpuSeconds += Double(row.integer("gpu") ?? 0) / 1000
                usage.imageBytes += row.integer("bytes") ?? 0
            }
            return usage
        }
    }

    public func jobs(ofKey name: String, statuses: [JobStatus], before: String?, limit: Int) async throws -> [JobRecord]? {
        try await guarded { () async throws -> [JobRecord]? in
            // Every status when none is asked for: the filter is one query either way.
            let wanted = (statuses.isEmpty ? JobStatus.allCases : statuses).map(\.rawValue)
            var start = Int64.max
            if let before {
                guard let seq = try await rows("SELECT seq FROM jobs WHERE id = \(before) AND key_name = \(name)").first?.integer("seq") else { return nil }
                start = Int64(seq)
            }
            return try await rows(
                // Without the graphs: a page of a hundred would read a hundred of them, for nothing.
                """
                SELECT \(unescaped: JobRecord.columnsWithoutWorkflow) FROM jobs
                WHERE key_name = \(name) AND status = ANY(\(wanted)) AND seq < \(start) ORDER BY seq DESC LIMIT \(Int64(limit))
                """
            ).map(JobRecord.init(row:))
        }
    }

    // MARK: Rows

    func generation(of id: String) -> Int? { held.withLockedValue { $0[id] } }

    public func forget(_ id: String) { held.withLockedValue { $0[id] = nil } }

    /// Runs a query and reads every row (the results here are small), within `callTimeout`.
    ///
    /// With `lock`, in a transaction that takes the advisory lock of that name first: queries
    /// that read before they write (an owner's count of slots, then a take) then see each
    /// other's commits instead of one snapshot each, so two instances cannot both take the last.
    ///
    /// With `bounded`, the server ends the statement itself before the call gives up: a write the
    /// caller is told was not stored is rolled back, not left to land later.
    func rows(_ query: PostgresQuery, serializedBy lock: String? = nil, bounded: Bool = false) async throws -> [PostgresRandomAccessRow] {
        let (client, logger) = (self.client, self.logger)
        let deadline = ContinuousClock.now + Self.callTimeout
        let rows = try await withAbandonableDeadline(deadline, timeout: { JobStoreError(.unavailable, "the job database did not answer within 5 s") }) {
            guard lock != nil || bounded else { return try await client.query(query, logger: logger).collect() }
            return try await client.withTransaction(logger: logger) { connection in
                // First: the wait for the advisory lock is one of the statements it bounds, and
                // each gets what is left of the call (the wait for a connection took some).
                if bounded {
                    let left = max(100, (deadline - .now - Self.commitMargin).milliseconds / 2)
                    _ = try await connection.query("SELECT set_config('statement_timeout', \(String(left)), true)", logger: logger).collect()
                }
                if let lock { try await self.startTransaction(on: connection, serializedBy: lock) }
                let rows = try await connection.query(query, logger: logger).collect()
                // The caller has been told it failed: rolled back, not committed after all.
                if bounded, ContinuousClock.now > deadline - Self.commitMargin {
                    throw JobStoreError(.unavailable, "the job database did not answer within 5 s")
                }
                return rows
            }
        }
        return rows.map { $0.makeRandomAccess() }
    }

    /// What a bounded write keeps of `callTimeout` for its commit.
    static let commitMargin = Duration.milliseconds(300)

    /// The first statement of a serialized transaction: takes the advisory lock, and lets the
    /// server end the transaction, with its locks, once it sits between statements for longer
    /// than `transactionIdleLimit`.
    func startTransaction(on connection: PostgresConnection, serializedBy lock: String) async throws {
        _ = try await connection.query(
            "SELECT set_config('idle_in_transaction_session_timeout', \(transactionIdleLimit), true), pg_advisory_xact_lock(\(PostgresJobStoreSchema.serializingLocks), hashtext(\(lock)))",
            logger: logger
        )
    }

    /// `idle_in_transaction_session_timeout` of this instance's transactions, in milliseconds (set
    /// per transaction: PgBouncer refuses it at connection start). Their statements go back to
    /// back; one left open longer belongs to an instance that went silent in it (its network
    /// cut, or paused), whose locks would hold up the take-over of its jobs until the server
    /// noticed the dead connection, hours later by TCP. At least 1 s, at most a third of a lease
    /// (the take-over comes a lease after the last renewal, which came at most a third of a lease
    /// before) and 2 s (under `callTimeout`).
    var transactionIdleLimit: String {
        "\(max(1000, min(leaseTimeout.milliseconds / 3, 2000)))"
    }

    /// Runs a statement whose rows are not needed.
    func execute(_ query: PostgresQuery) async throws {
        _ = try await rows(query)
    }

    /// Runs a database call; PostgreSQL's and the connection's errors, and a database that does
    /// not answer within `callTimeout`, become `unavailable`.
    @discardableResult
    func guarded<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as JobStoreError {
            throw error
        } catch {
            throw JobStoreError(.unavailable, "the job database cannot be reached: \(Self.reason(error))")
        }
    }

    /// Long for any statement here; a down database would otherwise hold every call while the
    /// pool tries to connect again, or while a query sent before the server died waits for an
    /// answer that never comes (such a wait does not end when cancelled: it is abandoned).
    static let callTimeout = Duration.seconds(5)

    /// The server's own message, or the error's kind: never a query's values or a password.
    static func reason(_ error: any Error) -> String {
        if let error = error as? PSQLError { return error.serverInfo?[.message] ?? "\(error.code)" }
        return "\(type(of: error))"
    }
}

extension PostgresRandomAccessRow: JobStoreRow {
    func text(_ column: String) -> String? {
        guard contains(column) else { return nil }
        return (try? self[column].decode(String?.self)) ?? nil
    }

    func integer(_ column: String) -> Int? {
        guard contains(column) else { return nil }
        return (try? self[column].decode(Int?.self)) ?? nil
    }

    func double(_ column: String) -> Double? {
        guard contains(column) else { return nil }
        return (try? self[column].decode(Double?.self)) ?? nil
    }
}

extension Duration {
    var milliseconds: Int { Int(components.seconds) * 1000 + Int(components.attoseconds / 1_000_000_000_000_000) }
}
