import Comfy

/// The async job API: `POST /api/jobs` (202 and the job), `GET /api/jobs/{id}`,
/// `DELETE /api/jobs/{id}`. Progress as Server-Sent Events is `JobEventStream`'s, behind
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
