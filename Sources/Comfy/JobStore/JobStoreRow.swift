import Foundation

/// One row of the `jobs` or `api_keys` table, whichever database it came from: both stores
/// keep the same columns (times in milliseconds since 1970), so one mapping reads them.
protocol JobStoreRow {
    func text(_ column: String) -> String?
    func integer(_ column: String) -> Int?
    func double(_ column: String) -> Double?
}

extension JobStoreRow {
    func date(_ column: String) -> Date? { integer(column).map(Date.init(milliseconds:)) }
}

extension JobRecord {
    /// The job a row holds; a row read without its workflow gets an empty one.
    init(row: some JobStoreRow) {
        let webhook = WebhookDelivery(
            state: row.text("webhook_state").flatMap(WebhookDelivery.State.init(rawValue:)) ?? .none,
            attempts: row.integer("webhook_attempts") ?? 0,
            lastStatus: row.integer("webhook_last_status"),
            deliveredAt: row.date("webhook_delivered_at"),
            nextAttemptAt: row.date("webhook_next_at")
        )
        self.init(
            id: row.text("id") ?? "",
            kind: row.text("kind").flatMap(JobKind.init(rawValue:)) ?? .async,
            status: row.text("status").flatMap(JobStatus.init(rawValue:)) ?? .failed,
            workflow: row.text("workflow").flatMap { try? JSONValue.parse(Array($0.utf8)) }?.objectValue ?? [:],
            outputNodeID: row.text("output_node_id"),
            owner: row.text("owner") ?? "",
            keyName: row.text("key_name"),
            webhookURL: row.text("webhook_url"),
            idempotencyKey: row.text("idempotency_key"),
            createdAt: row.date("created_at") ?? Date(timeIntervalSince1970: 0),
            startedAt: row.date("started_at"),
            finishedAt: row.date("finished_at"),
            promptID: row.text("prompt_id"),
            backend: row.text("backend"),
            progress: row.double("progress") ?? 0,
            outputFormat: row.text("output_format").flatMap(OutputFormat.init(stored:)) ?? .png,
            result: row.text("result").flatMap(JobResult.init(storedText:)),
            failure: row.text("error").flatMap(JobFailure.init(storedText:)),
            webhook: webhook,
            processRuns: row.integer("process_runs") ?? 0
        )
    }

    /// Every column but the workflow: a job's end does not need the graph read back.
    static let columnsWithoutWorkflow = """
        id, kind, status, output_node_id, owner, key_name, webhook_url, idempotency_key, created_at, started_at, finished_at, prompt_id,
        backend, progress, output_format, result, error, webhook_state, webhook_attempts, webhook_last_status, webhook_delivered_at, webhook_next_at,
        process_runs
        """

    /// The `output_format` column: `NULL` is PNG as made.
    var storedOutputFormat: String? { outputFormat == .png ? nil : outputFormat.stored }
}

extension APIKey {
    init(row: some JobStoreRow) {
        self.init(
            name: row.text("name") ?? "",
            maxRunning: row.integer("max_running"),
            maxQueued: row.integer("max_queued"),
            ratePerMinute: row.integer("rate_per_minute"),
            createdAt: row.date("created_at") ?? Date(timeIntervalSince1970: 0),
            revokedAt: row.date("revoked_at")
        )
    }
}

extension JobResult {
    /// The `result` column: a JSON object with the batch's other images under `others`.
    var storedText: String { storedValue.encodedText }

    private var storedValue: JSONValue {
        var object: [String: JSONValue] = ["url": .string(url), "filename": .string(filename), "content_type": .string(contentType)]
        object["expires_at"] = expiresAt.map { .number(Double($0.milliseconds)) }
        if !others.isEmpty { object["others"] = .array(others.map(\.storedValue)) }
        return .object(object)
    }

    init?(storedText: String) {
        guard let value = try? JSONValue.parse(Array(storedText.utf8)) else { return nil }
        self.init(storedValue: value)
    }

    private init?(storedValue value: JSONValue) {
        guard let url = value["url"]?.stringValue, let filename = value["filename"]?.stringValue, let type = value["content_type"]?.stringValue else { return nil }
        self.init(
            url: url, filename: filename, contentType: type, expiresAt: value["expires_at"]?.intValue.map { Date(milliseconds: $0) },
            others: value["others"]?.arrayValue?.compactMap { JobResult(storedValue: $0) } ?? []
        )
    }
}

extension JobFailure {
    /// The `error` column: the API's error answer, status and body.
    var storedText: String { JSONValue.object(["status": .number(Double(status)), "body": body]).encodedText }

    init?(storedText: String) {
        guard let value = try? JSONValue.parse(Array(storedText.utf8)), let status = value["status"]?.intValue, let body = value["body"] else { return nil }
        self.init(status: status, body: body)
    }
}

extension JSONValue {
    var encodedText: String { String(decoding: encoded(), as: UTF8.self) }
}
