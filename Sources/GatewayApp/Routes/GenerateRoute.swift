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

    /// Runs an already read request (a workflow tool's call, too); `endpoint` scopes its idempotency key.
    func generate(_ body: GenerateRequest, _ request: GatewayRequest, forceFile: Bool, endpoint: String) async throws -> GatewayResponse {
        try await limit.run { try await run(body, request, forceFile: forceFile, endpoint: endpoint) }
    }

    private func run(_ body: GenerateRequest, _ request: GatewayRequest, forceFile: Bool, endpoint: String) async throws -> GatewayResponse {
        let (record, requestHash) = try await admission.admit(body, request, kind: .sync, endpoint: endpoint)
        let insertion = try await runner.submit(record, requestHash: requestHash, ownerMaxRunning: request.apiKey?.maxRunning)
        let id = insertion.record.id
        var response: GatewayResponse
        do {
            // Without a key nobody can ask for the job again: it ends with its caller.
            switch try await runner.result(of: id, cancelIfAbandoned: record.idempotencyKey == nil) {
            case .finished(let job, let image):
                response = try await answer(job, image: image, file: forceFile || body.responseType == .file)
            case .unstored(let error):
                throw error
            case .stopped(let error):
                throw error
            case .progress:
                throw APIError(.internalError, "job \(id) has not ended")
            }
        } catch {
            response = apiError(for: error).response
        }
        response.headers.append(("X-Job-Id", id))
        if case .existing = insertion { response.headers.append(("Idempotent-Replayed", "true")) }
        return response
    }

    private func answer(_ job: JobRecord, image: [UInt8]?, file: Bool) async throws -> GatewayResponse {
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
        guard let result = job.result else { throw APIError(.internalError, "job \(job.id) completed without a result") }
        // A signed object-storage URL stops working at `expiresAt`: the caller is told when.
        let expiresAt = result.expiresAt.map { UTCTimestamp($0).iso8601 }
        if file {
            var bytes = image
            if bytes == nil { bytes = try await local.read(result.filename) }
            guard let bytes else {
                throw APIError(.resultGone, "job \(job.id)'s image is no longer stored", details: ["url": .string(result.url)])
            }
            return GatewayResponse(
                status: 200,
                headers: [
                    ("Content-Type", result.contentType),
                    ("Content-Disposition", "attachment; filename=\"\(result.filename)\""),
                    ("X-Image-URL", result.url),
                    ("Cache-Control", "no-store"),
                ] + (expiresAt.map { [("X-Image-URL-Expires", $0)] } ?? []),
                body: bytes
            )
        }
        var answer: [String: JSONValue] = [
            "url": .string(result.url),
            "filename": .string(result.filename),
            "content_type": .string(result.contentType),
        ]
        answer["expires_at"] = expiresAt.map(JSONValue.string)
        return .json(.object(answer))
    }
}
