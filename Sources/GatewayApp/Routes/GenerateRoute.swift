import Comfy

/// `POST /api/generate` and `POST /api/generate_file`: run a workflow as a stored job, wait for
/// it, answer with its image. `X-Job-Id` names the job, so a caller whose client gave up reads
/// it later at `/api/jobs/{id}`; with `Idempotency-Key` a retry waits on, or gets, the same job.
struct GenerateRoute: Sendable {
    let runner: JobRunner
    let local: LocalImageStore
    let limit: ConcurrencyLimit
    /// The node policy, the key's rate and quota, the idempotency key.
    let admission: JobAdmission

    func generate(_ request: GatewayRequest, forceFile: Bool) async throws -> GatewayResponse {
        let body = try GenerateRequest(body: request.body, contentType: request.header("content-type"))
        return try await generate(body, request, forceFile: forceFile, endpoint: "generate")
    }

    /// Runs an already read request (a workflow tool's call, too); `endpoint` scopes its
    /// idempotency key. `urlBase`: root-relative image URLs are answered absolute on it.
    func generate(_ body: GenerateRequest, _ request: GatewayRequest, forceFile: Bool, endpoint: String, urlBase: String? = nil) async throws -> GatewayResponse {
        try await limit.run { try await run(body, request, forceFile: forceFile, endpoint: endpoint, urlBase: urlBase) }
    }

    private func run(_ body: GenerateRequest, _ request: GatewayRequest, forceFile: Bool, endpoint: String, urlBase: String?) async throws -> GatewayResponse {
        let index = try Self.index(request)
        let first = try await insert(body, request, endpoint: endpoint)
        // The job the answer is about (`nil`: none, its admission was refused).
        var insertion: JobInsertion? = first
        var response: GatewayResponse
        do {
            // Without a key nobody can ask for the job again: it ends with its caller.
            var update = try await runner.result(of: first.record.id, cancelIfAbandoned: first.record.idempotencyKey == nil)
            if case .existing = first, case .finished(let job, _) = update, job.status == .cancelled, job.idempotencyKey == nil {
                // The job this retry found was cancelled by the gateway as its caller had gone, and
                // its key let go (`MAX_ABANDONED_JOBS_PER_CALLER`) while the retry waited: it runs anew.
                insertion = nil
                let fresh = try await insert(body, request, endpoint: endpoint)
                insertion = fresh
                update = try await runner.result(of: fresh.record.id, cancelIfAbandoned: fresh.record.idempotencyKey == nil)
            }
            switch update {
            case .finished(let job, let images):
                response = try await answer(job, images: images, file: forceFile || body.responseType == .file, index: index, urlBase: urlBase)
            case .unstored(let error):
                throw error
            case .stopped(let error):
                throw error
            case .progress:
                throw APIError(.internalError, "job \(insertion?.record.id ?? "") has not ended")
            }
        } catch {
            response = apiError(for: error).response
        }
        if let insertion {
            response.headers.append(("X-Job-Id", insertion.record.id))
            if case .existing = insertion { response.headers.append(("Idempotent-Replayed", "true")) }
        }
        return response
    }

    /// The stored job a retry under its idempotency key finds, or a new one.
    private func insert(_ body: GenerateRequest, _ request: GatewayRequest, endpoint: String) async throws -> JobInsertion {
        if let stored = try await admission.storedReplay(request, endpoint: endpoint) { return .existing(stored) }
        let (record, requestHash) = try await admission.admit(body, request, kind: .sync, endpoint: endpoint)
        return try await runner.submit(record, requestHash: requestHash, ownerMaxRunning: request.apiKey?.maxRunning, maxUnfinished: request.apiKey?.maxQueued)
    }

    /// `?index=N`: which image of a batch a file answer carries (0, the first, by default).
    static func index(_ request: GatewayRequest) throws(APIError) -> Int {
        guard let text = request.queryValue("index") else { return 0 }
        guard let index = Int(text), index >= 0 else {
            throw APIError(.invalidParameter, "index must be a whole number from 0", details: ["parameter": "index"])
        }
        return index
    }

    private func answer(_ job: JobRecord, images: [[UInt8]]?, file: Bool, index: Int, urlBase: String?) async throws -> GatewayResponse {
        switch job.status {
        case .completed:
            break
        case .failed:
            return job.failure.map(APIError.response(for:)) ?? APIError(.internalError, "the job failed").response
        case .cancelled:
            throw APIError(.jobCancelled, "job \(job.id) was cancelled")
        case .queued, .running:
            throw APIError(.internalError, "job \(job.id) has not ended")
        }
        guard var result = job.result else { throw APIError(.internalError, "job \(job.id) completed without a result") }
        if let urlBase { result = result.resolved(against: urlBase) }
        let all = result.all
        guard file else { return .json(result.json, headers: [("X-Image-Count", String(all.count))]) }
        guard index < all.count else {
            throw APIError(.invalidParameter, "index \(index) is past the last image; job \(job.id) made \(all.count)", details: ["parameter": "index"])
        }
        let chosen = all[index]
        var bytes = images.flatMap { index < $0.count ? $0[index] : nil }
        if bytes == nil { bytes = try await local.read(chosen.filename) }
        guard let bytes else {
            throw APIError(.resultGone, "job \(job.id)'s image is no longer stored", details: ["url": .string(chosen.url)])
        }
        // A signed object-storage URL stops working at `expiresAt`: the caller is told when.
        let expiresAt = chosen.expiresAt.map { UTCTimestamp($0).iso8601 }
        return GatewayResponse(
            status: 200,
            headers: [
                ("Content-Type", chosen.contentType),
                ("Content-Disposition", "attachment; filename=\"\(chosen.filename)\""),
                ("X-Image-URL", chosen.url),
                ("X-Image-Count", String(all.count)),
                ("Cache-Control", "no-store"),
            ] + (expiresAt.map { [("X-Image-URL-Expires", $0)] } ?? []),
            body: bytes
        )
    }
}
