import Comfy

/// The durable jobs' settings: `STATE_DIR` (`./state`, holds `jobs.sqlite`), `JOB_RETENTION`
/// (7 days; final jobs older than this are removed, their images are left to
/// `OUTPUT_RETENTION`); webhooks: `WEBHOOK_SECRET` (`whsec_<base64>`; without it jobs take no
/// `webhook_url`), `WEBHOOK_MAX_ATTEMPTS` (6, over about 7.5 h), `WEBHOOK_RETRY_BASE` (5 s, the
/// first pause), `WEBHOOK_TIMEOUT` (10 s per attempt), `WEBHOOK_ALLOW_PRIVATE` (false: no
/// loopback, private or link-local targets).
///
/// `JOB_STORE`: unset (or `sqlite`) keeps jobs in `STATE_DIR/jobs.sqlite`, for one instance;
/// `postgres://user:password@host:port/database[?sslmode=require]` puts every instance that
/// names it on one queue. `LEASE_TIMEOUT` (15 s): how long a shared store waits for a silent
/// instance before another takes its jobs over. `MAX_WAITING_JOBS` (10,000): async jobs that may
/// wait to start on an instance; beyond, `POST /api/jobs` is 429 `busy` and stores nothing (0: no limit).
/// `JOB_CRASH_LIMIT` (3): a job that was running each time that many gateway processes died is
/// failed instead of taken up again. `JOB_QUEUE_TIMEOUT` (1 h): how long after its submission
/// an async job may wait for a backend: a busy one, or one to come back while none that can run it is up.
struct JobConfiguration: Sendable {
    enum Store: Sendable, Equatable {
        case sqlite
        case postgres(PostgresStoreURL)
    }

    var store: Store
    var leaseTimeout: Duration
    var stateDirectory: String
    var retention: Duration
    var webhookSigner: WebhookSigner?
    var webhookMaxAttempts: Int
    var webhookRetryBase: Duration
    var webhookTimeout: Duration
    var webhookAllowPrivate: Bool
    var maxWaiting: Int
    var crashLimit: Int
    var queueTimeout: Duration

    var databasePath: String { "\(stateDirectory)/jobs.sqlite" }

    init(_ environment: Environment) throws {
        stateDirectory = environment["STATE_DIR"] ?? "./state"
        switch environment["JOB_STORE"] ?? "" {
        case "", "sqlite":
            store = .sqlite
        case let url:
            do {
                store = .postgres(try PostgresStoreURL(url))
            } catch {
                // The URL may hold a password: the message names the problem, not the value.
                throw ConfigurationError(variable: "JOB_STORE", problem: "\(error.description) (or leave it unset for SQLite)")
            }
        }
        leaseTimeout = try environment.duration("LEASE_TIMEOUT", default: .seconds(15))
        guard leaseTimeout >= .seconds(1), leaseTimeout <= .seconds(600) else {
            throw ConfigurationError(variable: "LEASE_TIMEOUT", problem: "expected 1 s to 10 min")
        }
        retention = try environment.duration("JOB_RETENTION", default: .seconds(7 * 24 * 3600))
        if let secret = environment["WEBHOOK_SECRET"], !secret.isEmpty {
            guard let signer = WebhookSigner(secret: secret) else {
                // The value itself is a secret: it is never printed.
                throw ConfigurationError(variable: "WEBHOOK_SECRET", problem: "expected whsec_ and at least 16 bytes in base64")
            }
            webhookSigner = signer
        }
        webhookMaxAttempts = try environment.integer("WEBHOOK_MAX_ATTEMPTS", default: 6, range: 1...20)
        webhookRetryBase = try environment.duration("WEBHOOK_RETRY_BASE", default: .seconds(5))
        webhookTimeout = try environment.duration("WEBHOOK_TIMEOUT", default: .seconds(10))
        webhookAllowPrivate = try environment.boolean("WEBHOOK_ALLOW_PRIVATE", default: false)
        maxWaiting = try environment.integer("MAX_WAITING_JOBS", default: 10_000, range: 0...10_000_000)
        crashLimit = try environment.integer("JOB_CRASH_LIMIT", default: 3, range: 1...100)
        queueTimeout = try environment.duration("JOB_QUEUE_TIMEOUT", default: .seconds(3600))
        guard queueTimeout >= .seconds(1), queueTimeout <= .seconds(7 * 24 * 3600) else {
            throw ConfigurationError(variable: "JOB_QUEUE_TIMEOUT", problem: "expected 1 s to 7 days")
        }
    }
}

extension JobConfiguration {
    /// Who signs webhooks; `nil` without `WEBHOOK_SECRET`. The root of the keys' secrets is in
    /// the shared store, else in `STATE_DIR/webhook-keys.key`.
    func webhookKeyring(store: any JobStore) throws -> WebhookKeyring? {
        guard let webhookSigner else { return nil }
        let root = try StateSecret.load("webhook-keys", stateDirectory: stateDirectory, shared: store as? any SharedSecrets, neededBy: "WEBHOOK_SECRET")
        return WebhookKeyring(gateway: webhookSigner, root: root)
    }
}
