import Comfy

/// `GET /healthz`: 200 while at least one backend can take work, else 503. Operators
/// (`METRICS_ALLOW`) also see each backend's state, URL, last error and models, the queue, the
/// job store and the styles; anyone else only the status, which is what a load balancer needs.
/// A probe every second from each load balancer finds the same state almost every time: the
/// answer is made again only when what it shows changed.
struct HealthRoute: Sendable {
    let pool: BackendPool
    let styles: StyleLibrary
    let jobs: JobStoreStats
    let memo = ResponseMemo<Inputs>()
    let publicMemo = ResponseMemo<Bool>()

    struct Inputs: Equatable, Sendable {
        struct Broken: Equatable, Sendable {
            var file: String
            var reason: String
        }

        var backends: [BackendStatus]
        var queued: Int
        var counts: JobCounts?
        var sizeInBytes: Int
        var styles: [String]
        var broken: [Broken]
    }

    func health(_ request: GatewayRequest) async -> GatewayResponse {
        guard request.isOperator else {
            return publicMemo.response(for: pool.status().contains(where: \.isUp)) { usable in
                .json(.object(["status": .string(usable ? "ok" : "unavailable")]), status: usable ? 200 : 503)
            }
        }
        let stats = await jobs.snapshot()
        let catalogue = await styles.catalogue()
        let inputs = Inputs(
            backends: pool.status(), queued: pool.queued(), counts: stats.counts, sizeInBytes: stats.sizeInBytes,
            styles: catalogue.names, broken: catalogue.broken.map { Inputs.Broken(file: $0.file, reason: $0.reason) }
        )
        return memo.response(for: inputs, Self.answer)
    }

    private static func answer(_ inputs: Inputs) -> GatewayResponse {
        let backends = inputs.backends
        let usable = backends.contains(where: \.isUp)
        var store: [String: JSONValue] = ["size_bytes": .number(Double(inputs.sizeInBytes))]
        if let counts = inputs.counts {
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
            "queued_jobs": .number(Double(inputs.queued)),
            "job_store": .object(store),
            "styles": .object([
                "loaded": .array(inputs.styles.map(JSONValue.string)),
                "broken": .array(inputs.broken.map { .object(["file": .string($0.file), "reason": .string($0.reason)]) }),
            ]),
        ]), status: usable ? 200 : 503)
    }
}
