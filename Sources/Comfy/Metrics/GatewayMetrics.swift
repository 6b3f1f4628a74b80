import Metrics

/// What the gateway reports through swift-metrics (exported as Prometheus text at `/metrics`).
struct GatewayMetrics: Sendable {
    private let health: [Gauge]
    private let depth = Gauge(label: "comfy_gateway_queue_depth")
    private let moved = Counter(label: "comfy_gateway_jobs_moved_total")

    init(backends: [String]) {
        health = backends.map { Gauge(label: "comfy_gateway_backend_up", dimensions: [("backend", $0)]) }
    }

    /// 1 while the backend takes jobs, else 0.
    func backendHealth(_ index: Int, _ state: BackendHealth) {
        health[index].record(state == .up ? 1 : 0)
    }

    func queueDepth(_ jobs: Int) { depth.record(jobs) }

    func jobMoved() { moved.increment() }

    /// One job ended: counted by priority and outcome, its latency into a histogram.
    func jobEnded(_ priority: JobPriority, outcome: String, after duration: Duration) {
        Counter(label: "comfy_gateway_jobs_total", dimensions: [("priority", priority.rawValue), ("outcome", outcome)]).increment()
        Timer(label: "comfy_gateway_job_duration_seconds", dimensions: [("priority", priority.rawValue)]).recordNanoseconds(
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
        )
    }
}
