import Comfy
import Metrics
import Prometheus

/// `GET /metrics`: the gateway's metrics in Prometheus text format, for operators: nginx lets
/// only `METRICS_ALLOW` in, and the router checks `METRICS_TOKEN` when it is set.
struct MetricsRoute: Sendable {
    let registry: PrometheusCollectorRegistry
    let sessions: DrawingSessions
    let pool: BackendPool
    let jobs: JobStoreStats

    /// Routes swift-metrics into a Prometheus registry; call once, before any metric is made.
    static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Jobs take from a fraction of a second to GENERATE_TIMEOUT.
        factory.defaultDurationHistogramBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600].map { .milliseconds(Int64($0 * 1000)) }
        MetricsSystem.bootstrap(factory)
        return registry
    }

    func metrics(_ request: GatewayRequest) async -> GatewayResponse {
        guard request.isOperator else {
            var error = APIError(.unauthorized, "/metrics needs the operators' token (METRICS_TOKEN): send Authorization: Bearer <token>")
            error.headers = [("WWW-Authenticate", #"Bearer realm="comfy-gateway-metrics""#)]
            return error.response
        }
        // Gauges of counts are read when scraped, not polled.
        Gauge(label: "comfy_gateway_drawing_sessions").record(await sessions.count)
        _ = pool.queued()
        let stats = await jobs.snapshot()
        if let counts = stats.counts {
            for status in JobStatus.allCases {
                Gauge(label: "comfy_gateway_stored_jobs", dimensions: [("status", status.rawValue)]).record(counts.jobs[status, default: 0])
            }
            for state in [WebhookDelivery.State.pending, .delivered, .failed] {
                Gauge(label: "comfy_gateway_stored_webhooks", dimensions: [("state", state.rawValue)]).record(counts.webhooks[state, default: 0])
            }
        }
        Gauge(label: "comfy_gateway_job_store_bytes").record(stats.sizeInBytes)
        return GatewayResponse(
            status: 200,
            headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), ("Cache-Control", "no-store")],
            body: registry.emitToBuffer()
        )
    }
}
