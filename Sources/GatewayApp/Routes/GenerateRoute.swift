import Comfy

/// `POST /api/generate` and `POST /api/generate_file`: run a workflow, store its image, answer.
struct GenerateRoute: Sendable {
    let pool: BackendPool
    let store: any ImageStore
    let timeout: Duration
    let limit: ConcurrencyLimit
    /// What a caller's workflow may make ComfyUI do (`NODE_POLICY`).
    let policy: NodePolicy

    func generate(_ request: GatewayRequest, forceFile: Bool) async throws -> GatewayResponse {
        try await limit.run { try await run(request, forceFile: forceFile) }
    }

    private func run(_ request: GatewayRequest, forceFile: Bool) async throws -> GatewayResponse {
        let body = try GenerateRequest(body: request.body)
        try policy.check(body.workflow)
        let image = try await pool.run(
            PromptJob(workflow: body.workflow, outputNodeID: body.outputNodeID, timeout: timeout),
            priority: .batch,
            owner: request.remoteAddress
        )
        let stored = try await store.store(image.bytes, mimeType: image.mimeType)
        // A signed object-storage URL stops working at `expiresAt`: the caller is told when.
        let expiresAt = stored.expiresAt.map { UTCTimestamp($0).iso8601 }
        if forceFile || body.responseType == .file {
            return GatewayResponse(
                status: 200,
                headers: [
                    ("Content-Type", stored.mimeType),
                    ("Content-Disposition", "attachment; filename=\"\(stored.filename)\""),
                    ("X-Image-URL", stored.url),
                    ("Cache-Control", "no-store"),
                ] + (expiresAt.map { [("X-Image-URL-Expires", $0)] } ?? []),
                body: image.bytes
            )
        }
        var answer: [String: JSONValue] = [
            "url": .string(stored.url),
            "filename": .string(stored.filename),
            "content_type": .string(stored.mimeType),
        ]
        answer["expires_at"] = expiresAt.map(JSONValue.string)
        return .json(.object(answer))
    }
}
