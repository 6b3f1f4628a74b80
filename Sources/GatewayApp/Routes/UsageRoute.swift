import Comfy

/// `GET /api/usage`: what the calling key has used: jobs by status, GPU seconds (ComfyUI's
/// execution start to the image), image bytes.
struct UsageRoute: Sendable {
    let store: any JobStore

    func usage(_ request: GatewayRequest) async throws -> GatewayResponse {
        guard let key = request.apiKey else { throw APIError(.notFound, "usage is counted per API key, and this gateway has none") }
        let usage = try await store.usage(key: key.name)
        var jobs: [String: JSONValue] = [:]
        for status in JobStatus.allCases { jobs[status.rawValue] = .number(Double(usage.jobs[status, default: 0])) }
        func limit(_ value: Int?) -> JSONValue { value.map { .number(Double($0)) } ?? .null }
        let limits: [String: JSONValue] = [
            "max_running": limit(key.maxRunning), "max_queued": limit(key.maxQueued), "rate_per_minute": limit(key.ratePerMinute),
        ]
        let answer: [String: JSONValue] = [
            "key": .string(key.name),
            "jobs": .object(jobs),
            "gpu_seconds": .number((usage.gpuSeconds * 1000).rounded() / 1000),
            "image_bytes": .number(Double(usage.imageBytes)),
            "limits": .object(limits),
        ]
        return .json(.object(answer))
    }
}
