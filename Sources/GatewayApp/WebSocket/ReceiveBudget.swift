import Metrics
import Synchronization

/// The bytes of drawing-socket messages still arriving, all sockets together. A message is
/// buffered whole (a sketch of up to `MAX_SKETCH_BYTES`, base64), and nginx lets each address
/// hold `DRAWING_CONNECTIONS` sockets: without a shared bound, a few addresses sending large
/// messages slowly would hold gigabytes. A socket whose next bytes do not fit is closed (1013).
final class ReceiveBudget: Sendable {
    let limit: Int
    private let held = Mutex(0)
    private let gauge = Gauge(label: "comfy_gateway_websocket_receiving_bytes")

    init(limit: Int) {
        self.limit = limit
    }

    /// What is taken now.
    var taken: Int { held.withLock { $0 } }

    /// Takes `count` bytes if they fit.
    func take(_ count: Int) -> Bool {
        let now: Int? = held.withLock { held in
            guard held + count <= limit else { return nil }
            held += count
            return held
        }
        guard let now else { return false }
        gauge.record(now)
        return true
    }

    func give(_ count: Int) {
        guard count > 0 else { return }
        gauge.record(held.withLock { held in
            held = max(0, held - count)
            return held
        })
    }
}
