/// The job database's schema, one migration per version (`PRAGMA user_version`).
///
/// Append a migration; never edit one that has shipped: databases made by it exist. Each is
/// tested on a database that the versions before it made (JobStoreMigrationTests).
enum JobStoreSchema {
    static let migrations: [[String]] = [
        // 1: jobs, with their idempotency key, prompt, result, error and webhook state.
        [
            """
            CREATE TABLE jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                workflow TEXT NOT NULL,
                output_node_id TEXT,
                owner TEXT NOT NULL DEFAULT '',
                webhook_url TEXT,
                idempotency_key TEXT UNIQUE,
                request_hash TEXT,
                created_at INTEGER NOT NULL,
                started_at INTEGER,
                finished_at INTEGER,
                prompt_id TEXT,
                backend TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                progress REAL NOT NULL DEFAULT 0,
                result TEXT,
                error TEXT,
                webhook_state TEXT NOT NULL DEFAULT 'none',
                webhook_attempts INTEGER NOT NULL DEFAULT 0,
                webhook_last_status INTEGER,
                webhook_delivered_at INTEGER,
                webhook_next_at INTEGER
            )
            """,
            "CREATE INDEX jobs_by_status ON jobs (status, seq)",
            "CREATE INDEX jobs_by_webhook_due ON jobs (webhook_state, webhook_next_at)",
            "CREATE INDEX jobs_by_finish ON jobs (finished_at)",
        ],
        // 2: API keys (hashed), the key each job belongs to, and what each job used.
        [
            """
            CREATE TABLE api_keys (
                name TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                max_running INTEGER,
                max_queued INTEGER,
                rate_per_minute INTEGER,
                created_at INTEGER NOT NULL,
                revoked_at INTEGER
            )
            """,
            "ALTER TABLE jobs ADD COLUMN key_name TEXT",
            "ALTER TABLE jobs ADD COLUMN gpu_ms INTEGER",
            "ALTER TABLE jobs ADD COLUMN image_bytes INTEGER",
            "CREATE INDEX jobs_by_key ON jobs (key_name, status)",
        ],
        // 3: the format the caller wants the images in (`webp:90`); NULL is PNG as made.
        [
            "ALTER TABLE jobs ADD COLUMN output_format TEXT",
        ],
        // 4: how many gateway processes began running each job and ended without ending it or
        // handing it back (a crash, a kill): a job that keeps killing the gateway is not run again.
        [
            "ALTER TABLE jobs ADD COLUMN process_runs INTEGER NOT NULL DEFAULT 0",
        ],
        // 5: a key's jobs newest first, page by page (`GET /api/jobs`).
        [
            "CREATE INDEX jobs_by_key_seq ON jobs (key_name, seq)",
        ],
    ]

    static var latestVersion: Int { migrations.count }
}
