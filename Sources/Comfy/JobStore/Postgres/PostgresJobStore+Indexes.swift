import Logging
import PostgresNIO

/// Indexes built after the start, `CONCURRENTLY`, rather than by a migration: on a large table
/// a build in the migration's transaction blocks every instance's writes for as long as it
/// takes (their lease renewals time out), and may outlast the start's 30 s, at every start.
extension PostgresJobStore {
    /// Name and definition of each; a store without one reads more (no answer is wrong).
    static let concurrentIndexes: [(name: String, definition: String)] = [
        // A key's jobs newest first (`jobs(ofKey:)`).
        ("jobs_by_key_seq", "jobs (key_name, seq)"),
    ]
    /// The advisory lock one instance builds them under.
    static let indexLock: Int64 = PostgresJobStoreSchema.migrationLock + 1

    /// Builds the indexes the database lacks, one instance at a time (the others go on without
    /// waiting). A build cut short (a stop, a lost connection) leaves an invalid index behind:
    /// it is dropped and built again at the next start.
    func buildConcurrentIndexes() async {
        do {
            try await client.withConnection { connection in
                let locked = try await connection.query("SELECT pg_try_advisory_lock(\(Self.indexLock)) AS locked", logger: logger)
                    .collect().first?.decode(Bool.self)
                guard locked == true else { return }
                do {
                    for index in Self.concurrentIndexes {
                        let found = try await connection.query(
                            "SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = \(index.name)",
                            logger: logger
                        ).collect().first?.decode(Bool.self)
                        if found == true { continue }
                        if found == false {
                            _ = try await connection.query(PostgresQuery(unsafeSQL: "DROP INDEX CONCURRENTLY IF EXISTS \(index.name)"), logger: logger)
                        }
                        _ = try await connection.query(
                            PostgresQuery(unsafeSQL: "CREATE INDEX CONCURRENTLY IF NOT EXISTS \(index.name) ON \(index.definition)"), logger: logger
                        )
                        logger.notice("built an index of the job database", metadata: ["job_store.index": "\(index.name)"])
                    }
                } catch {
                    _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.indexLock))", logger: logger)
                    throw error
                }
                _ = try await connection.query("SELECT pg_advisory_unlock(\(Self.indexLock))", logger: logger)
            }
        } catch where !Task.isCancelled {
            logger.warning("cannot build an index of the job database; the next start tries again", metadata: ["error": "\(Self.reason(error))"])
        } catch {}
    }
}
