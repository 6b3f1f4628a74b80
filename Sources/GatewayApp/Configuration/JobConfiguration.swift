import Comfy

/// The durable jobs' settings: `STATE_DIR` (`./state`, holds `jobs.sqlite`), `JOB_RETENTION`
/// (7 days; final jobs older than this are removed, their images are left to
/// `OUTPUT_RETENTION`); webhooks: `WEBHOOK_SECRET` (`whsec_<base64>`; without it jobs take no
/// `webhook_url`), `WEBHOOK_MAX_ATTEMPTS` (6, over about 7.5 h), `WEBHOOK_RETRY_BASE` (5 s, the
/// first pause), `WEBHOOK_TIMEOUT` (10 s per attempt), `WEBHOOK_ALLOW_PRIVATE` (false: no
/// loopback, private or link-local targets).
struct JobConfiguration: Sendable {
    var stateDirectory: String
    var retention: Duration
    var webhookSigner: WebhookSigner?
    var webhookMaxAttempts: Int
    var webhookRetryBase: Duration
    var webhookTimeout: Duration
    var webhookAllowPrivate: Bool

    var databasePath: String { "\(stateDirectory)/jobs.sqlite" }

    init(_ environment: Environment) throws {
        stateDirectory = environment["STATE_DIR"] ?? "./state"
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
    }
}
