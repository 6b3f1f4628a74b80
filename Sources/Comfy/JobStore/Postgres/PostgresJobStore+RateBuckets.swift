import PostgresNIO

/// Keys' rates as token buckets every instance spends from: one row per key, refilled by the
/// time since its last spend (on the database's clock), taken from in one statement.
extension PostgresJobStore {
    public func spend(rateOf key: String, perMinute: Int) async throws -> Duration? {
        let rate = Double(perMinute)
        // The outer select reads the bucket as it was before the statement: on a refusal, as it is.
        let row = try await guarded {
            try await rows(
                """
                WITH clock AS (SELECT gateway_now_ms() AS now),
                taken AS (
                    INSERT INTO key_buckets AS b (key, tokens, updated_at) SELECT \(key), \(rate) - 1, now FROM clock
                    ON CONFLICT (key) DO UPDATE SET
                        tokens = LEAST(\(rate), b.tokens + (EXCLUDED.updated_at - b.updated_at) * \(rate) / 60000.0) - 1,
                        updated_at = EXCLUDED.updated_at
                    WHERE LEAST(\(rate), b.tokens + (EXCLUDED.updated_at - b.updated_at) * \(rate) / 60000.0) >= 1
                    RETURNING tokens
                )
                SELECT (SELECT COUNT(*) FROM taken) AS taken,
                    (SELECT LEAST(\(rate), tokens + ((SELECT now FROM clock) - updated_at) * \(rate) / 60000.0) FROM key_buckets WHERE key = \(key)) AS tokens
                """
            ).first
        }
        if row?.integer("taken") == 1 { return nil }
        let tokens = row?.double("tokens") ?? 0
        return .milliseconds(Int(((1 - tokens) * 60_000 / rate).rounded(.up)))
    }
}
