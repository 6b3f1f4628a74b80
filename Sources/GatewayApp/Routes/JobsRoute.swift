import Comfy

/// The async job API: `POST /api/jobs` (202 and the job), `GET /api/jobs` (the key's jobs),
/// `GET /api/jobs/{id}`, `DELETE /api/jobs/{id}`. Progress as Server-Sent Events is `JobEventStream`'s, behind
/// nginx's streaming location.
struct JobsRoute: Sendable {
    let runner: JobRunner
    let admission: JobAdmission
    let webhooks: JobConfiguration
    /// What a webhook may never be sent to.
    let protected: ProtectedEndpoints
    /// Shared with the generate calls: a submission may wait on slow input-image URLs.
    let limit: ConcurrencyLimit

    func submit(_ request: GatewayRequest) async throws -> GatewayResponse {
        try await submit(try GenerateRequest(body: request.body, contentType: request.header("content-type")), request, endpoint: "jobs")
    }

    /// Queues an already read request (a workflow tool's async call, too).
    func submit(_ body: GenerateRequest, _ request: GatewayRequest, endpoint: String) async throws -> GatewayResponse {
        try await limit.run { try await queue(body, request, endpoint: endpoint) }
    }

    private func queue(_ body: GenerateRequest, _ request: GatewayRequest, endpoint: String) async throws -> GatewayResponse {
        if let stored = try await admission.storedReplay(request, endpoint: endpoint) {
            return .json(try await json(stored), status: 202, headers: [("Location", "/api/jobs/\(stored.id)"), ("Idempotent-Replayed", "true")])
        }
        var webhookURL: String?
        if let url = body.webhookURL {
            guard webhooks.webhookSigner != nil else {
                throw APIError(.invalidRequest, "this gateway sends no webhooks: WEBHOOK_SECRET is not set", details: ["field": "webhook_url"])
            }
            webhookURL = try await OutboundURL.check(url, allowPrivate: webhooks.webhookAllowPrivate, protected: protected, owner: request.owner).url
        }
        let (record, requestHash) = try await admission.admit(body, request, kind: .async, endpoint: endpoint, webhookURL: webhookURL)
        let insertion = try await runner.submit(
            record, requestHash: requestHash, ownerMaxRunning: request.apiKey?.maxRunning, maxUnfinished: request.apiKey?.maxQueued
        )
        let job = insertion.record
        var headers = [("Location", "/api/jobs/\(job.id)")]
        if case .existing = insertion { headers.append(("Idempotent-Replayed", "true")) }
        return .json(try await json(job), status: 202, headers: headers)
    }

    func show(_ request: GatewayRequest) async throws -> GatewayResponse {
        let job = try await find(request)
        return .json(try await json(job))
    }

    /// The calling key's jobs, newest first, `limit` (20, at most 100) a page: `?status=`
    /// (one or several, comma-separated) and `?cursor=` (the `next_cursor` of the page before).
    /// Jobs are listed per key: without keys a job is found by its id alone.
    func list(_ request: GatewayRequest) async throws -> GatewayResponse {
        guard let key = request.apiKey else { throw APIError(.notFound, "jobs are listed per API key, and this gateway has none") }
        // Given once, and decodable: a parameter read otherwise would widen the list unasked.
        func parameter(_ name: String) throws(APIError) -> String? {
            let values = request.queryValues(name)
            guard values.count <= 1 else {
                throw APIError(.invalidParameter, "\(name) is given \(values.count) times; give it once (several statuses go comma-separated)", details: ["parameter": .string(name)])
            }
            guard let given = values.first else { return nil }
            guard let value = given else { throw APIError(.invalidParameter, "\(name) has a broken percent escape", details: ["parameter": .string(name)]) }
            return value
        }
        var limit = 20
        if let text = try parameter("limit") {
            guard let value = Int(text), (1...100).contains(value) else {
                throw APIError(.invalidParameter, "limit must be a whole number from 1 to 100", details: ["parameter": "limit"])
            }
            limit = value
        }
        var statuses: [JobStatus] = []
        if let text = try parameter("status") {
            for name in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let status = JobStatus(rawValue: String(name)) else {
                    throw APIError(
                        .invalidParameter, "status must be queued, running, completed, failed or cancelled, or several of them comma-separated",
                        details: ["parameter": "status"]
                    )
                }
                if !statuses.contains(status) { statuses.append(status) }
            }
        }
        let cursor = try parameter("cursor")
        let invalidCursor = APIError(
            .invalidParameter, "cursor names no job of this key: it is a next_cursor of this list (its job may have been removed since)",
            details: ["parameter": "cursor"]
        )
        if let cursor, !JobRecord.isValidID(cursor) { throw invalidCursor }
        // One more than the page: whether another page follows is known without asking again.
        guard let found = try await runner.store.jobs(ofKey: key.name, statuses: statuses, before: cursor, limit: limit + 1) else { throw invalidCursor }
        let page = await runner.withLiveState(Array(found.prefix(limit)))
        return .json(.object([
            "jobs": .array(page.map { $0.json() }),
            "next_cursor": found.count > limit ? page.last.map { .string($0.id) } ?? .null : .null,
        ]))
    }

    func cancel(_ request: GatewayRequest) async throws -> GatewayResponse {
        let job = try await find(request)
        // A job whose image was being stored when the cancel came ends completed: that is no cancel.
        guard !job.status.isFinal, let cancelled = try await runner.cancel(job.id), cancelled.status == .cancelled else {
            let now = try await runner.job(job.id) ?? job
            var error = APIError(.jobFinished, "job \(job.id) has ended (\(now.status.rawValue)); it is left as it is")
            error.topLevel["job"] = now.json()
            throw error
        }
        return .json(cancelled.json())
    }

    private func find(_ request: GatewayRequest) async throws -> JobRecord {
        let id = String(request.path.dropFirst("/api/jobs/".count))
        // Another key's job is as unknown as a job that does not exist.
        guard JobRecord.isValidID(id), let job = try await runner.job(id), JobAdmission.mayAccess(job, request) else {
            throw APIError(.notFound, "no job with id \"\(id.prefix(64))\"")
        }
        return job
    }

    private func json(_ job: JobRecord) async throws -> JSONValue {
        job.json(queuePosition: job.status == .queued ? try await runner.store.queuePosition(of: job.id) : nil)
    }
}
