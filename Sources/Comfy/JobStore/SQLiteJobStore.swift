import Foundation
import Logging

/// The embedded job store: one SQLite database in WAL mode, `STATE_DIR/jobs.sqlite`.
///
/// `synchronous=NORMAL`: a commit is in the WAL before the call returns, and the WAL is synced
/// at checkpoints. A crash of the process loses nothing (the WAL is in the page cache, which
/// outlives the process); a power cut may lose the last commits but never corrupts the file.
/// All calls run on one thread of its own, so the cooperative pool never waits on the disk;
/// most of each log checkpoint (and its fsyncs) runs on a second connection's thread, off the
/// calls' path.
public final class SQLiteJobStore: JobStore {
    public let path: String
    private let connection: SQLiteDatabase
    private let checkpointer: SQLiteDatabase

    private init(path: String, connection: SQLiteDatabase, checkpointer: SQLiteDatabase) {
        self.path = path
        self.connection = connection
        self.checkpointer = checkpointer
    }

    /// Opens (or creates) the database and brings its schema up to date. Refuses one whose
    /// schema is newer than this gateway knows.
    public static func open(path: String, logger: Logger) async throws -> SQLiteJobStore {
        try await open(path: path, logger: logger, upTo: JobStoreSchema.latestVersion)
    }

    /// Opens the database with the migrations up to `version` applied (tests make old databases so).
    static func open(path: String, logger: Logger, upTo version: Int) async throws -> SQLiteJobStore {
        let connection: SQLiteDatabase
        let checkpointer: SQLiteDatabase
        do {
            connection = try await SQLiteDatabase.open(path: path)
        } catch {
            throw JobStoreError(.unavailable, "cannot open the job database \(path): \(error)")
        }
        do {
            // In WAL mode before the second connection opens the file.
            _ = try await connection.query("PRAGMA journal_mode = WAL", [])
            checkpointer = try await SQLiteDatabase.open(path: path)
        } catch {
            await connection.close()
            throw JobStoreError(.unavailable, "cannot open the job database \(path): \(error)")
        }
        let store = SQLiteJobStore(path: path, connection: connection, checkpointer: checkpointer)
        do {
            try await store.prepare(upTo: version)
            try await connection.handCheckpoints(to: checkpointer)
        } catch let error as JobStoreError {
            await store.close()
            throw error
        } catch {
            await store.close()
            throw JobStoreError(.unavailable, "cannot open the job database \(path): \(error)")
        }
        return store
    }

    /// Closes both connections; the last to close checkpoints the whole log.
    public func close() async {
        await connection.close()
        await checkpointer.close()
    }

    private func prepare(upTo target: Int) async throws {
        _ = try await connection.query("PRAGMA synchronous = NORMAL", [])
        _ = try await checkpointer.query("PRAGMA synchronous = NORMAL", [])
        let version = try await userVersion()
        let latest = JobStoreSchema.latestVersion
        guard version <= latest else {
            throw JobStoreError(.newerSchema, "the job database \(path) has schema version \(version), newer than this gateway's \(latest): run the newer gateway, or start with another STATE_DIR")
        }
        for next in (version + 1)...max(target, version + 1) where next <= target {
            try await migrate(to: next)
        }
    }

    /// The schema version (`PRAGMA user_version`).
    func userVersion() async throws -> Int {
        try await connection.query("PRAGMA user_version", []).first?.first?.integer ?? 0
    }

    /// Applies one migration and records its version in the same transaction.
    func migrate(to version: Int) async throws {
        _ = try await connection.query("BEGIN IMMEDIATE", [])
        do {
            for statement in JobStoreSchema.migrations[version - 1] {
                _ = try await connection.query(statement, [])
            }
            _ = try await connection.query("PRAGMA user_version = \(version)", [])
            _ = try await connection.query("COMMIT", [])
        } catch {
            _ = try? await connection.query("ROLLBACK", [])
            throw error
        }
    }

    // MARK: JobStore

    public func insert(_ job: JobRecord, requestHash: String?, keyWindow: Duration, unfinishedLimit: Int?) async throws -> JobInsertion {
        try await guarded {
            if let key = job.idempotencyKey {
                // A key older than its window names nothing any more.
                let expired = job.createdAt.addingTimeInterval(-keyWindow.seconds)
                _ = try await connection.query("UPDATE jobs SET idempotency_key = NULL WHERE idempotency_key = ? AND created_at < ?", [.text(key), .integer(expired.milliseconds)])
            }
            // One statement counts the key's unfinished jobs and stores the new one: no other
            // insert lands in between (SQLite has one writer).
            let limit = job.keyName == nil ? nil : unfinishedLimit
            let inserted = try await connection.query(
                """
                INSERT INTO jobs (id, kind, status, workflow, output_node_id, owner, webhook_url, idempotency_key, request_hash, created_at, key_name, output_format)
                SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
                WHERE (?13 IS NULL OR (SELECT COUNT(*) FROM jobs WHERE key_name = ?11 AND status IN ('queued', 'running')) < ?13)
                    AND NOT EXISTS (SELECT 1 FROM api_keys WHERE name = ?11 AND revoked_at IS NOT NULL)
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING id
                """,
                [
                    .text(job.id), .text(job.kind.rawValue), .text(job.status.rawValue), .text(JSONValue.object(job.workflow).encodedText),
                    .optionalText(job.outputNodeID), .text(job.owner), .optionalText(job.webhookURL), .optionalText(job.idempotencyKey),
                    .optionalText(requestHash), .integer(job.createdAt.milliseconds), .optionalText(job.keyName),
                    .optionalText(job.storedOutputFormat), .optionalInteger(limit),
                ]
            )
            if !inserted.isEmpty { return .created(job) }
            guard let key = job.idempotencyKey,
                let row = try await connection.query("SELECT * FROM jobs WHERE idempotency_key = ?", [.text(key)]).first
            else {
                if let name = job.keyName,
                    try await !connection.query("SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NOT NULL", [.text(name)]).isEmpty
                {
                    throw JobStoreError.keyRevoked
                }
                if let limit, let name = job.keyName { throw JobStoreError.unfinishedLimitReached(key: name, limit: limit) }
                throw JobStoreError(.unavailable, "the job was not stored")
            }
            guard row.column("request_hash")?.string == requestHash else {
                // The stored key is scoped by API key (`name\0key`): the message does not repeat it.
                throw JobStoreError(.idempotencyKeyReused, "this Idempotency-Key was used for another request within 24 h; use a new key for a new request")
            }
            return .existing(Self.record(row))
        }
    }

    public func job(_ id: String) async throws -> JobRecord? {
        try await guarded {
            try await connection.query("SELECT * FROM jobs WHERE id = ?", [.text(id)]).first.map(Self.record)
        }
    }

    public func markRunning(_ id: String, promptID: String, backend: String, at date: Date) async throws -> Bool {
        try await guarded {
            let rows = try await connection.query(
                """
                UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?), prompt_id = ?, backend = ?, attempts = attempts + 1,
                    process_runs = process_runs + CASE WHEN status = 'queued' THEN 1 ELSE 0 END
                WHERE id = ? AND status IN ('queued', 'running') RETURNING id
                """,
                [.integer(date.milliseconds), .text(promptID), .text(backend), .text(id)]
            )
            return !rows.isEmpty
        }
    }

    public func finish(
        _ id: String, status: JobStatus, result: JobResult?, failure: JobFailure?, gpuMilliseconds: Int?, imageBytes: Int?, releasingKey: Bool,
        at date: Date
    ) async throws -> JobRecord? {
        try await guarded {
            try await connection.query(
                """
                UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?, gpu_ms = ?, image_bytes = ?,
                    progress = CASE WHEN ? = 'completed' THEN 1 ELSE progress END,
                    idempotency_key = CASE WHEN ? THEN NULL ELSE idempotency_key END,
                    webhook_state = CASE WHEN webhook_url IS NULL THEN 'none' ELSE 'pending' END,
                    webhook_next_at = CASE WHEN webhook_url IS NULL THEN NULL ELSE ? END
                WHERE id = ? AND status IN ('queued', 'running')
                RETURNING \(JobRecord.columnsWithoutWorkflow)
                """,
                [
                    .text(status.rawValue), .integer(date.milliseconds), .optionalText(result?.storedText),
                    .optionalText(failure?.storedText), .optionalInteger(gpuMilliseconds), .optionalInteger(imageBytes),
                    .text(status.rawValue), .integer(releasingKey ? 1 : 0), .integer(date.milliseconds), .text(id),
                ]
            ).first.map(Self.record)
        }
    }

    public func idempotentJob(_ key: String, within window: Duration, at now: Date) async throws -> (job: JobRecord, requestHash: String?)? {
        try await guarded {
            let since = now.addingTimeInterval(-window.seconds)
            return try await connection.query(
                "SELECT * FROM jobs WHERE idempotency_key = ? AND created_at >= ? LIMIT 1", [.text(key), .integer(since.milliseconds)]
            ).first.map { (Self.record($0), $0.column("request_hash")?.string) }
        }
    }

    public func releaseIdempotencyKey(of id: String) async throws {
        try await guarded {
            _ = try await connection.query("UPDATE jobs SET idempotency_key = NULL WHERE id = ?", [.text(id)])
        }
    }

    public func unfinished() async throws -> [JobRecord] {
        try await guarded {
            try await connection.query("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY seq", []).map(Self.record)
        }
    }

    /// Alone on the database (`STATE_DIR/jobs.lock`), every unfinished job is the last process's.
    public func takeUpUnfinished() async throws -> [JobRecord] {
        try await guarded {
            _ = try await connection.query("UPDATE jobs SET process_runs = process_runs + 1 WHERE status = 'running'", [])
            return try await connection.query("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY seq", []).map(Self.record)
        }
    }

    /// Alone on the database, every running job is this process's.
    public func handBack() async throws {
        try await guarded {
            _ = try await connection.query("UPDATE jobs SET process_runs = process_runs - 1 WHERE status = 'running' AND process_runs > 0", [])
        }
    }

    public func acquit(_ ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        try await guarded {
            let list = JSONValue.array(ids.map(JSONValue.string)).encodedText
            _ = try await connection.query(
                "UPDATE jobs SET process_runs = process_runs - 1 WHERE id IN (SELECT value FROM json_each(?)) AND process_runs > 0", [.text(list)]
            )
        }
    }

    public func oldestUnfinished() async throws -> Date? {
        try await guarded {
            try await connection.query("SELECT MIN(created_at) AS oldest FROM jobs WHERE status IN ('queued', 'running')", [])
                .first?.column("oldest")?.integer.map(Date.init(milliseconds:))
        }
    }

    public func queuePosition(of id: String) async throws -> Int? {
        try await guarded {
            let rows = try await connection.query(
                """
                SELECT (SELECT COUNT(*) FROM jobs AS ahead WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) AS position
                FROM jobs WHERE id = ? AND status = 'queued'
                """,
                [.text(id)]
            )
            return rows.first?.column("position")?.integer
        }
    }

    /// Those being sent stay due until their attempt is recorded, and are an owner's oldest, so
    /// they count toward its share.
    public func dueWebhooks(at now: Date, limit: Int, connections: Int, excluding excluded: Set<String>) async throws -> [JobRecord] {
        // One statement whatever the count: the ids as a JSON array.
        let excludedIDs = String(decoding: JSONValue.array(excluded.sorted().map(JSONValue.string)).encoded(), as: UTF8.self)
        return try await guarded {
            try await connection.query(
                """
                WITH due AS (
                    SELECT seq, webhook_next_at, ROW_NUMBER() OVER (PARTITION BY owner ORDER BY webhook_next_at, seq) AS turn
                    FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at <= ?1 AND id NOT IN (SELECT value FROM json_each(?4))
                ), dealt AS (
                    SELECT seq, ROW_NUMBER() OVER (ORDER BY turn, webhook_next_at, seq) AS place FROM due
                )
                SELECT * FROM jobs WHERE seq IN (
                    SELECT seq FROM dealt WHERE place <= ?2
                ) ORDER BY webhook_next_at LIMIT ?3
                """,
                [.integer(now.milliseconds), .integer(connections), .integer(limit), .text(excludedIDs)]
            ).map(Self.record)
        }
    }

    public func nextWebhookDue(after now: Date) async throws -> Date? {
        try await guarded {
            let rows = try await connection.query(
                "SELECT MIN(webhook_next_at) AS due FROM jobs WHERE webhook_state = 'pending' AND webhook_next_at > ?", [.integer(now.milliseconds)]
            )
            return rows.first?.column("due")?.integer.map(Date.init(milliseconds:))
        }
    }

    public func recordWebhookAttempt(of id: String, status: Int?, delivered: Bool, nextAttemptAt: Date?, at date: Date) async throws {
        let state: WebhookDelivery.State = delivered ? .delivered : nextAttemptAt == nil ? .failed : .pending
        try await guarded {
            _ = try await connection.query(
                """
                UPDATE jobs SET webhook_state = ?, webhook_attempts = webhook_attempts + 1, webhook_last_status = ?,
                    webhook_delivered_at = ?, webhook_next_at = ?
                WHERE id = ? AND webhook_state = 'pending'
                """,
                [
                    .text(state.rawValue), .optionalInteger(status), delivered ? .integer(date.milliseconds) : .null,
                    nextAttemptAt.map { .integer($0.milliseconds) } ?? .null, .text(id),
                ]
            )
        }
    }

    public func deleteFinished(before date: Date) async throws -> Int {
        try await guarded {
            try await connection.query(
                "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ? AND webhook_state != 'pending' RETURNING seq",
                [.integer(date.milliseconds)]
            ).count
        }
    }

    public func counts() async throws -> JobCounts {
        try await guarded {
            var counts = JobCounts()
            for row in try await connection.query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status", []) {
                if let status = row.column("status")?.string.flatMap(JobStatus.init(rawValue:)) {
                    counts.jobs[status] = row.column("n")?.integer ?? 0
                }
            }
            for row in try await connection.query("SELECT webhook_state, COUNT(*) AS n FROM jobs GROUP BY webhook_state", []) {
                if let state = row.column("webhook_state")?.string.flatMap(WebhookDelivery.State.init(rawValue:)) {
                    counts.webhooks[state] = row.column("n")?.integer ?? 0
                }
            }
            return counts
        }
    }

    public func sizeInBytes() -> Int {
        [path, path + "-wal"].reduce(0) { total, file in
            var info = stat()
            return total + (stat(file, &info) == 0 ? Int(info.st_size) : 0)
        }
    }

    // MARK: API keys

    public func createKey(_ key: APIKey, hash: String) async throws {
        try await guarded {
            let rows = try await connection.query(
                """
                INSERT INTO api_keys (name, hash, max_running, max_queued, rate_per_minute, created_at) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT DO NOTHING RETURNING name
                """,
                [.text(key.name), .text(hash), .optionalInteger(key.maxRunning), .optionalInteger(key.maxQueued), .optionalInteger(key.ratePerMinute), .integer(key.createdAt.milliseconds)]
            )
            guard !rows.isEmpty else { throw JobStoreError(.keyExists, "a key named \(key.name) exists already (revoke it, or pick another name)") }
        }
    }

    public func keys() async throws -> [APIKey] {
        try await guarded {
            try await connection.query("SELECT * FROM api_keys ORDER BY name", []).map(APIKey.init(row:))
        }
    }

    public func activeKey(hash: String) async throws -> APIKey? {
        try await guarded {
            try await connection.query("SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL", [.text(hash)]).first.map(APIKey.init(row:))
        }
    }

    public func keyCount() async throws -> Int {
        try await guarded {
            try await connection.query("SELECT COUNT(*) AS n FROM api_keys", []).first?.column("n")?.integer ?? 0
        }
    }

    public func revokeKey(named name: String, at date: Date) async throws -> Bool {
        try await guarded {
            !(try await connection.query(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL RETURNING name", [.integer(date.milliseconds), .text(name)]
            ).isEmpty)
        }
    }

    public func unfinishedJobCount(key name: String) async throws -> Int {
        try await guarded {
            try await connection.query(
                "SELECT COUNT(*) AS n FROM jobs WHERE key_name = ? AND status IN ('queued', 'running')", [.text(name)]
            ).first?.column("n")?.integer ?? 0
        }
    }

    public func usage(key name: String) async throws -> KeyUsage {
        try await guarded {
            var usage = KeyUsage()
            for row in try await connection.query(
                "SELECT status, COUNT(*) AS n, SUM(gpu_ms) AS gpu, SUM(image_bytes) AS bytes FROM jobs WHERE key_name = ? GROUP BY status", [.text(name)]
            ) {
                guard let status = row.column("status")?.string.flatMap(JobStatus.init(rawValue:)) else { continue }
                usage.jobs[status] = row.column("n")?.integer ?? 0
                usage.gpuSeconds += Double(row.column("gpu")?.integer ?? 0) / 1000
                usage.imageBytes += row.column("bytes")?.integer ?? 0
            }
            return usage
        }
    }

    public func jobs(ofKey name: String, statuses: [JobStatus], before: String?, limit: Int) async throws -> [JobRecord]? {
        try await guarded { () async throws -> [JobRecord]? in
            var start = Int.max
            if let before {
                let rows = try await connection.query("SELECT seq FROM jobs WHERE id = ? AND key_name = ?", [.text(before), .text(name)])
                guard let seq = rows.first?.column("seq")?.integer else { return nil }
                start = seq
            }
            // Without the graphs: a page of a hundred would read a hundred of them, for nothing.
            // One status reads `jobs_by_key` (key, status, seq) in order, none `jobs_by_key_seq`;
            // several, each its own part of the first, merged (`status IN` read every job of the key).
            let one = "SELECT seq, \(JobRecord.columnsWithoutWorkflow) FROM jobs WHERE key_name = ?"
            guard !statuses.isEmpty else {
                return try await connection.query(
                    one + " AND seq < ? ORDER BY seq DESC LIMIT ?", [.text(name), .integer(start), .integer(limit)]
                ).map(Self.record)
            }
            let part = "SELECT * FROM (\(one) AND status = ? AND seq < ? ORDER BY seq DESC LIMIT ?)"
            let sql = statuses.map { _ in part }.joined(separator: " UNION ALL ") + " ORDER BY seq DESC LIMIT ?"
            let binds = statuses.flatMap { [SQLiteValue.text(name), .text($0.rawValue), .integer(start), .integer(limit)] } + [.integer(limit)]
            return try await connection.query(sql, binds).map(Self.record)
        }
    }

    // MARK: Rows

    /// Runs a database call; SQLite's errors become `unavailable` (disk full, read-only, I/O).
    private func guarded<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as JobStoreError {
            throw error
        } catch let error as SQLiteFailure {
            throw JobStoreError(.unavailable, "the job database cannot be written: \(error.message)")
        }
    }

    static func record(_ row: SQLiteResultRow) -> JobRecord { JobRecord(row: row) }
}

