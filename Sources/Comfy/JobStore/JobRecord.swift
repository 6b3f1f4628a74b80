import Foundation

/// Where a stored job is in its life; `completed`, `failed` and `cancelled` are final.
public enum JobStatus: String, Sendable, CaseIterable {
    case queued, running, completed, failed, cancelled

    public var isFinal: Bool { self == .completed || self == .failed || self == .cancelled }
}

/// How the job came in: `POST /api/jobs` (the caller polls, listens or gets a webhook) or a
/// sync `generate` call (a caller waits on the connection).
public enum JobKind: String, Sendable {
    case async, sync
}

/// One job as the store keeps it: what to run, where it is, and how it ended.
public struct JobRecord: Sendable, Equatable {
    public var id: String
    public var kind: JobKind
    public var status: JobStatus
    public var workflow: [String: JSONValue]
    public var outputNodeID: String?
    /// Whose job it is (the caller's address): owners take turns on the backends.
    public var owner: String
    /// Whose turn it takes on the backends, and whose share of the limits per caller: the
    /// owner, with an IPv6 address counted as its /64 (one subscriber has them all).
    public var turnOwner: String { AddressShare.name(of: owner) }
    /// The API key that submitted it; `nil` when keys are off. Other keys do not see it.
    public var keyName: String?
    public var webhookURL: String?
    public var idempotencyKey: String?
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// The prompt last submitted for it and the backend it went to: what a restart reconciles.
    public var promptID: String?
    public var backend: String?
    public var progress: Double
    /// What the images are converted to before they are stored.
    public var outputFormat: OutputFormat
    public var result: JobResult?
    public var failure: JobFailure?
    public var webhook: WebhookDelivery
    /// Gateway processes that began running it (submitted or took up its prompt) and ended
    /// without ending it or handing it back: crashed, killed, or cut off from the store.
    public var processRuns: Int

    public init(
        id: String, kind: JobKind, status: JobStatus = .queued, workflow: [String: JSONValue], outputNodeID: String?, owner: String,
        keyName: String? = nil, webhookURL: String? = nil, idempotencyKey: String? = nil, createdAt: Date = Date(), startedAt: Date? = nil,
        finishedAt: Date? = nil, promptID: String? = nil, backend: String? = nil, progress: Double = 0, outputFormat: OutputFormat = .png, result: JobResult? = nil,
        failure: JobFailure? = nil, webhook: WebhookDelivery = WebhookDelivery(), processRuns: Int = 0
    ) {
        self.id = id
        self.kind = kind
        self.status = status
        self.workflow = workflow
        self.outputNodeID = outputNodeID
        self.owner = owner
        self.keyName = keyName
        self.webhookURL = webhookURL
        self.idempotencyKey = idempotencyKey
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.promptID = promptID
        self.backend = backend
        self.progress = progress
        self.outputFormat = outputFormat
        self.result = result
        self.failure = failure
        self.webhook = webhook
        self.processRuns = processRuns
    }

    /// A sync job without an idempotency key: nobody can ask for it again once its caller is
    /// gone, so it ends with the caller (also in a crash) and is never resumed.
    public var endsWithItsCaller: Bool { kind == .sync && idempotencyKey == nil }

    /// A fresh job id: 128 random bits, so ids cannot be guessed from one another.
    public static func newID() -> String {
        UUID().uuidString.lowercased()
    }

    /// Whether `text` has the shape of a job id (checked before it reaches the database).
    public static func isValidID(_ text: String) -> Bool {
        text.utf8.count == 36 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || $0 == 0x2D }
    }
}

/// Where a completed job's images are: the first one's fields, and the batch's others.
public struct JobResult: Sendable, Equatable {
    public var url: String
    public var filename: String
    public var contentType: String
    public var expiresAt: Date?
    /// The batch's other images, after the first (each without `others` of its own).
    public var others: [JobResult]

    public init(url: String, filename: String, contentType: String, expiresAt: Date? = nil, others: [JobResult] = []) {
        self.url = url
        self.filename = filename
        self.contentType = contentType
        self.expiresAt = expiresAt
        self.others = others
    }

    public init(_ stored: StoredImage, others: [StoredImage] = []) {
        self.init(
            url: stored.url, filename: stored.filename, contentType: stored.mimeType, expiresAt: stored.expiresAt,
            others: others.map { JobResult($0) }
        )
    }

    /// With every root-relative URL (`/output_images/...`, stored without `SERVER_BASE_URL`)
    /// made absolute on `base` (`scheme://host[:port]`).
    public func resolved(against base: String) -> JobResult {
        var resolved = self
        if url.hasPrefix("/") { resolved.url = base + url }
        resolved.others = others.map { $0.resolved(against: base) }
        return resolved
    }

    /// Every image, the first included.
    public var all: [JobResult] {
        var first = self
        first.others = []
        return [first] + others
    }
}

/// Why a job failed: the HTTP status and body the sync API answers for it, so a caller who
/// fetches it later reads the same error.
public struct JobFailure: Sendable, Equatable {
    public var status: Int
    /// `{"error": {"code", "message", ...}, ...}`.
    public var body: JSONValue

    public init(status: Int, body: JSONValue) {
        self.status = status
        self.body = body
    }

    /// The `error` object of the body.
    public var error: JSONValue { body["error"] ?? body }
    public var code: String? { error["code"]?.stringValue }
}

/// The state of a job's webhook.
public struct WebhookDelivery: Sendable, Equatable {
    public enum State: String, Sendable {
        /// No webhook, or the job has not ended yet.
        case none
        /// Due at `nextAttemptAt`.
        case pending
        case delivered
        /// Every attempt failed.
        case failed
    }

    public var state: State
    public var attempts: Int
    public var lastStatus: Int?
    public var deliveredAt: Date?
    public var nextAttemptAt: Date?

    public init(state: State = .none, attempts: Int = 0, lastStatus: Int? = nil, deliveredAt: Date? = nil, nextAttemptAt: Date? = nil) {
        self.state = state
        self.attempts = attempts
        self.lastStatus = lastStatus
        self.deliveredAt = deliveredAt
        self.nextAttemptAt = nextAttemptAt
    }
}
