import Comfy

/// `GET /healthz`: each backend's state; 200 while at least one can take work, else 503.
struct HealthRoute: Sendable {
    let pool: BackendPool
    let styles: StyleLibrary
    let jobs: JobStoreStats

    func health(_ request: GatewayRequest) async -> GatewayResponse {
        let backends = pool.status()
        let usable = backends.contains(where: \.isUp)
        let stats = await jobs.snapshot()
        var store: [String: JSONValue] = ["size_bytes": .number(Double(stats.sizeInBytes))]
        if let counts = stats.counts {
            store["jobs"] = .object(Dictionary(uniqueKeysWithValues: JobStatus.allCases.map { ($0.rawValue, JSONValue.number(Double(counts.jobs[$0, default: 0]))) }))
            store["webhooks"] = .object([
                "pending": .number(Double(counts.webhooks[.pending, default: 0])),
                "delivered": .number(Double(counts.webhooks[.delivered, default: 0])),
                "failed": .number(Double(counts.webhooks[.failed, default: 0])),
            ])
        } else {
            store["error"] = "the job store cannot be read"
        }
        return .json(.object([
            "status": .string(usable ? "ok" : "unavailable"),
            "backends": .array(backends.map { backend in
                .object([
                    "url": .string(backend.url),
                    "state": .string(backend.health.rawValue),
                    "in_flight": .number(Double(backend.inFlight)),
                    "capacity": .number(Double(backend.capacity)),
                    "last_error": backend.lastError.map(JSONValue.string) ?? .null,
                    "models": backend.models?.json ?? .null,
                    "reported_down": backend.reportedDown.map { report in
                        .object(["instance": .string(report.instance), "reason": report.reason.map(JSONValue.string) ?? .null])
                    } ?? .null,
                ])
            }),
            "queued_jobs": .number(Double(pool.queued())),
            "job_store": .object(store),
            "styles": .object([
                "loaded": .array(await styles.names().map(JSONValue.string)),
                "broken": .array(await styles.broken().map { .object(["file": .string($0.file), "reason": .string($0.reason)]) }),
            ]),
        ]), status: usable ? 200 : 503)
    }
}
