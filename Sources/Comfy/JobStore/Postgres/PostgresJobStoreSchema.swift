/// The shared job database's schema, one migration per version, kept in `gateway_schema`.
///
/// The same tables as the SQLite store's (JobStoreSchema) with what several instances need:
/// each unfinished job's lease (`lease_owner`, `lease_until`, `lease_generation`) and the
/// backend slots every instance takes from. Times are milliseconds since 1970 as in SQLite;
/// leases are measured on the database's clock, so the instances' clocks need not agree.
/// Append a migration; never edit one that has shipped.
enum PostgresJobStoreSchema {
    /// The advisory lock a migrating instance holds: two starting at once do not both migrate.
    static let migrationLock: Int64 = 0x636F_6D66_7967_7731
    /// The class of the two-part advisory locks that serialize claims by a name (an owner's).
    static let serializingLocks: Int32 = 0x6367_7731

    static let migrations: [[String]] = [
        // 1: jobs with leases, API keys, backend slots.
        [
            """
            CREATE FUNCTION gateway_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
            AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$
            """,
            """
            CREATE TABLE jobs (
                seq BIGSERIAL PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                workflow TEXT NOT NULL,
                output_node_id TEXT,
                owner TEXT NOT NULL DEFAULT '',
                key_name TEXT,
                webhook_url TEXT,
                idempotency_key TEXT UNIQUE,
                request_hash TEXT,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT,
                prompt_id TEXT,
                backend TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                progress DOUBLE PRECISION NOT NULL DEFAULT 0,
                output_format TEXT,
                result TEXT,
                error TEXT,
                gpu_ms BIGINT,
                image_bytes BIGINT,
                webhook_state TEXT NOT NULL DEFAULT 'none',
                webhook_attempts INTEGER NOT NULL DEFAULT 0,
                webhook_last_status INTEGER,
                webhook_delivered_at BIGINT,
                webhook_next_at BIGINT,
                lease_owner TEXT,
                lease_until BIGINT,
                lease_generation BIGINT NOT NULL DEFAULT 1
            )
            """,
            "CREATE INDEX jobs_by_status ON jobs (status, seq)",
            "CREATE INDEX jobs_by_webhook_due ON jobs (webhook_state, webhook_next_at)",
            "CREATE INDEX jobs_by_finish ON jobs (finished_at)",
            "CREATE INDEX jobs_by_key ON jobs (key_name, status)",
            "CREATE INDEX jobs_by_lease ON jobs (lease_until) WHERE status IN ('queued', 'running')",
            """
            CREATE TABLE api_keys (
                name TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                max_running INTEGER,
                max_queued INTEGER,
                rate_per_minute INTEGER,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT
            )
            """,
            """
            CREATE TABLE backend_slots (
                backend TEXT NOT NULL,
                slot INTEGER NOT NULL,
                holder TEXT,
                ticket TEXT,
                job_id TEXT,
                lease_until BIGINT,
                PRIMARY KEY (backend, slot)
            )
            """,
            "CREATE INDEX backend_slots_by_holder ON backend_slots (holder)",
            "CREATE INDEX backend_slots_by_job ON backend_slots (job_id)",
        ],
        // 2: drawing sessions' seed, style, prompt and last result, for the instance a painter
        // reconnects to when theirs died.
        [
            """
            CREATE TABLE drawing_sessions (
                id TEXT PRIMARY KEY,
                seed BIGINT NOT NULL,
                style TEXT,
                prompt TEXT,
                result TEXT,
                updated_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX drawing_sessions_by_update ON drawing_sessions (updated_at)",
        ],
        // 3: interactive work waiting for a backend slot, which batch work lets go first.
        [
            """
            CREATE TABLE slot_waiters (
                ticket TEXT PRIMARY KEY,
                backend TEXT NOT NULL,
                holder TEXT NOT NULL,
                lease_until BIGINT NOT NULL
            )
            """,
            "CREATE INDEX slot_waiters_by_backend ON slot_waiters (backend, lease_until)",
        ],
        // 4: backends an instance finds down, which every instance avoids; slots and waiters by
        // owner, for owners' turns and caps across instances; keys' rate buckets; input images;
        // the keys every instance signs and names with; the instance sending a webhook.
        [
            "CREATE TABLE gateway_secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
            """
            CREATE TABLE job_inputs (
                name TEXT PRIMARY KEY,
                bytes BYTEA NOT NULL,
                used_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX job_inputs_by_use ON job_inputs (used_at)",
            """
            CREATE TABLE key_buckets (
                key TEXT PRIMARY KEY,
                tokens DOUBLE PRECISION NOT NULL,
                updated_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE backend_reports (
                backend TEXT NOT NULL,
                instance TEXT NOT NULL,
                reason TEXT,
                lease_until BIGINT NOT NULL,
                PRIMARY KEY (backend, instance)
            )
            """,
            "ALTER TABLE backend_slots ADD COLUMN owner TEXT",
            "CREATE INDEX backend_slots_by_owner ON backend_slots (owner)",
            "ALTER TABLE slot_waiters ADD COLUMN owner TEXT",
            "ALTER TABLE slot_waiters ADD COLUMN owner_cap BIGINT",
            "ALTER TABLE slot_waiters ADD COLUMN batch BOOLEAN NOT NULL DEFAULT false",
            "ALTER TABLE jobs ADD COLUMN webhook_claimed_by TEXT",
        ],
        // 5: the API key a drawing session belongs to (DRAWING_AUTH).
        [
            "ALTER TABLE drawing_sessions ADD COLUMN owner TEXT",
        ],
        // 6: how many slots in a row each backend gave interactive work while batch work waited,
        // and each waiter's instance's INTERACTIVE_BURST.
        [
            "CREATE TABLE backend_turns (backend TEXT PRIMARY KEY, interactive_run BIGINT NOT NULL DEFAULT 0)",
            "ALTER TABLE slot_waiters ADD COLUMN burst BIGINT",
        ],
        // 7: how many gateway processes began running each job and ended without ending it or
        // handing it back (JobStoreSchema's version 4).
        [
            "ALTER TABLE jobs ADD COLUMN process_runs INTEGER NOT NULL DEFAULT 0",
        ],
    ]

    static var latestVersion: Int { migrations.count }
}
