import Comfy

/// `GET /healthz`: each backend's state; 200 while at least one can take work, else 503.
struct HealthRoute: Sendable {
    let pool: BackendPool
    let styles: StyleLibrary

    func health(_ request: GatewayRequest) async -> GatewayResponse {
        let backends = pool.status()
        let usable = backends.contains(where: \.isUp)
        return .json(.object([
            "status": .string(usable ? "ok" : "unavailable"),
            "backends": .array(backends.map { backend in
                .object([
                    "url": .string(backend.url),
                    "state": .string(backend.health.rawValue),
                    "in_flight": .number(Double(backend.inFlight)),
                    "capacity": .number(Double(backend.capacity)),
                    "last_error": backend.lastError.map(JSONValue.string) ?? .null,
                ])
            }),
            "queued_jobs": .number(Double(pool.queued())),
            "styles": .object([
                "loaded": .array(await styles.names().map(JSONValue.string)),
                "broken": .array(await styles.broken().map { .object(["file": .string($0.file), "reason": .string($0.reason)]) }),
            ]),
        ]), status: usable ? 200 : 503)
    }
}
