import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers

/// Delivers the webhooks of ended jobs from the store: signed, retried with growing pauses
/// until `maxAttempts`, and taken up again after a restart (the store keeps what is due).
/// Each delivery runs on its own within a deadline, so a receiver that hangs or resets
/// holds up nothing else. On a shared store, each instance sends the webhooks it claimed
/// (for a lease, renewed while it sends), so a webhook is sent at least once: again by
/// another instance when its sender died or was held up before recording it.
public final class WebhookSender: Sendable {
    public struct Configuration: Sendable {
        public var keyring: WebhookKeyring
        public var maxAttempts: Int
        /// The first pause; later ones follow Standard Webhooks' schedule, scaled by it
        /// (5 s → 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, ...).
        public var retryBase: Duration
        public var timeout: Duration
        public var allowPrivate: Bool
        /// Never sent to, whatever `allowPrivate` says.
        public var protected: ProtectedEndpoints

        public init(
            keyring: WebhookKeyring, maxAttempts: Int, retryBase: Duration, timeout: Duration, allowPrivate: Bool, protected: ProtectedEndpoints = .none
        ) {
            self.protected = protected
            self.keyring = keyring
            self.maxAttempts = maxAttempts
            self.retryBase = retryBase
            self.timeout = timeout
            self.allowPrivate = allowPrivate
        }
    }

    private let store: any JobStore
    private let http: CurlHTTPClient
    private let configuration: Configuration
    private let logger: Logger
    private let nudges = WaiterTable<Int, Void>()
    /// Due webhooks read from the store at a time.
    private static let batch = 64
    /// Deliveries at once: the threads of the client it is given. They are dealt in turn to the
    /// owners (API keys, or addresses) with deliveries due or under way (`JobStore.dueWebhooks`):
    /// one whose receivers hang leaves the others theirs.
    public static let connections = 8
    /// Jobs whose delivery is under way, so the next scan does not start it twice.
    private let inFlight = NIOLockedValueBox(Set<String>())
    /// Deliveries whose attempt the store would not record (a full disk), with when they may go
    /// again: the store still holds them as due, and the next scan would send them at once.
    private let heldBack = NIOLockedValueBox([String: ContinuousClock.Instant]())
    /// How many are held back now.
    var heldBackCount: Int { heldBack.withLockedValue { $0.count } }

    public init(store: any JobStore, http: CurlHTTPClient, configuration: Configuration, logger: Logger) {
        self.store = store
        self.http = http
        self.configuration = configuration
        self.logger = logger
    }

    /// A job with a webhook ended: look at the store now.
    public func nudge() {
        nudges.resume(0, with: .success(()))
    }

    /// Sends what is due until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                do {
                    let now = Date()
                    // Read before the store: a delivery that ends after it was read as due is
                    // not started again (SQLite's due webhooks are not claimed).
                    let busy = inFlight.withLockedValue { $0 }
                    let held = heldBack.withLockedValue { held in
                        held = held.filter { $0.value > .now }
                        return held
                    }
                    // Held back ones are left out of the store's dealing: they take no connection's place from
                    // the others, and a shared store does not claim them for this instance meanwhile.
                    let due = try await store.dueWebhooks(at: now, limit: Self.batch, connections: Self.connections, excluding: Set(held.keys))
                    var started = 0
                    for record in due where !busy.contains(record.id) && inFlight.withLockedValue({ $0.insert(record.id).inserted }) {
                        started += 1
                        group.addTask {
                            await self.deliver(record)
                            self.inFlight.withLockedValue { _ = $0.remove(record.id) }
                            self.nudge()
                        }
                    }
                    // A full batch may hide more that are due; deliveries under way nudge when they end.
                    if started > 0, due.count == Self.batch { continue }
                    let next = try await store.nextWebhookDue(after: now)
                    var wake = ContinuousClock.now + .seconds(min(60, max(0, next?.timeIntervalSinceNow ?? 60)))
                    if let ends = held.values.min() { wake = min(wake, ends) }
                    _ = await nudges.wait(for: 0, until: wake)
                } catch {
                    logger.warning("cannot read due webhooks from the job store", metadata: ["error": "\(error)"])
                    _ = await nudges.wait(for: 0, until: .now + .seconds(5))
                }
            }
        }
    }

    /// The pause before attempt `attempt + 1`, after `attempt` failed ones.
    func pause(after attempt: Int) -> Duration {
        let schedule: [Int64] = [1, 60, 360, 1440, 3600, 7200]  // × base: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h
        return configuration.retryBase * schedule[min(max(attempt - 1, 0), schedule.count - 1)]
    }

    private var shared: (any SharedJobStore)? { store as? any SharedJobStore }

    private func deliver(_ record: JobRecord) async {
        guard let url = record.webhookURL else { return }
        let attempt = record.webhook.attempts + 1
        let body = record.json().encoded()
        var status: Int?
        var problem: String?
        do {
            // Checked again at each attempt: the name may point elsewhere by now.
            let target = try await OutboundURL.check(url, allowPrivate: configuration.allowPrivate, protected: configuration.protected, owner: record.owner)
            var request = CurlRequest(
                method: "POST", url: target.url,
                headers: [("Content-Type", "application/json"), ("User-Agent", "comfy-gateway-webhooks")]
                    + configuration.keyring.signer(for: record).headers(id: record.id, timestamp: Int(Date().timeIntervalSince1970), body: body),
                body: body, timeout: configuration.timeout
            )
            target.pin(&request)
            // On a shared store a claim lasts a lease from its last renewal: sent later, another
            // instance may have claimed and sent it meanwhile (this one was held up). Read after
            // the URL's check, whose lookups may take seconds while the claim is renewed; checked
            // by the thread that sends it, after the wait for one of the connections.
            if let shared { request.sendBy = shared.webhookClaimHeld(record.id) ?? .now }
            let response = try await http.execute(request)
            status = response.status
            if !(200..<300).contains(response.status) { problem = "HTTP \(response.status)" }
        } catch let error as CurlError where error.kind == .tooLate {
            logger.notice("webhook not sent: this instance was held up past its claim, which runs out for another to send", metadata: ["job.id": "\(record.id)"])
            shared?.letWebhookGo(record.id)
            return
        } catch let refusal as OutboundURL.Refusal where refusal.busy {
            // The gateway's own lookups were full, not the receiver's fault: no attempt is spent
            // (several of one owner's deliveries start at once, and each lookup takes a place).
            logger.notice("webhook not sent yet: no place for its host's lookup came in time; it goes again shortly", metadata: ["job.id": "\(record.id)"])
            heldBack.withLockedValue { $0[record.id] = .now + max(.seconds(1), configuration.retryBase) }
            shared?.letWebhookGo(record.id)
            return
        } catch {
            problem = "\(error)"
        }
        let delivered = problem == nil
        let next: Date? = delivered || attempt >= configuration.maxAttempts ? nil : Date().addingTimeInterval(pause(after: attempt).seconds)
        Counter(label: "comfy_gateway_webhook_deliveries_total", dimensions: [("outcome", delivered ? "delivered" : next == nil ? "failed" : "retry")]).increment()
        if let problem {
            logger.notice("webhook delivery failed", metadata: [
                "job.id": "\(record.id)", "webhook.attempt": "\(attempt)", "error": "\(problem)", "webhook.retry": "\(next != nil)",
            ])
        }
        do {
            try await store.recordWebhookAttempt(of: record.id, status: status, delivered: delivered, nextAttemptAt: next, at: Date())
        } catch {
            logger.error("cannot record a webhook attempt; it goes again after its pause", metadata: ["job.id": "\(record.id)", "error": "\(error)"])
            heldBack.withLockedValue { $0[record.id] = .now + max(.seconds(1), pause(after: attempt)) }
        }
    }
}
