/// A backend's health from what the gateway observes of it — its WebSocket, the
/// `/system_stats` probe, events about our prompts — as a state machine over an injected
/// clock: no sockets, no sleeping, so a table of timed events tests it whole.
///
/// Rules: up while the socket is connected, the probe has not failed twice in a row and the
/// backend is not stalled. Prompts in flight and no event about them for `stallTimeout`: the
/// backend is stalled for as long again and its prompts move. A socket down for
/// `failoverAfter` with prompts in flight: they move. A stall is only a suspicion until the
/// backend's queue is asked: if one of our prompts is running there, a node is just slow.
/// A job's REST calls failing `restFailureLimit` times in a row (no answer, an error status)
/// take it out for `restCooloff` (or until its socket is opened anew); then it takes jobs
/// again, and one more failure takes it out again (a circuit breaker's half-open state).
struct BackendHealthMonitor: Sendable {
    /// What the backend must do with its prompts in flight.
    enum Action: Sendable, Equatable {
        case none
        /// The socket has been down too long: fail the prompts over to other backends.
        case failOver
        /// No progress for too long: remove the prompts there and move them.
        case stalled
    }

    let timing: BackendTiming
    private(set) var isConnected = false
    private(set) var probeFailures = 0
    private(set) var stalledUntil: ContinuousClock.Instant?
    private(set) var restFailures = 0
    /// Out until then: its REST calls kept failing.
    private(set) var restOutUntil: ContinuousClock.Instant?
    static let restFailureLimit = 3
    private var inFlight = 0
    private var busySince: ContinuousClock.Instant?
    private var lastProgress: ContinuousClock.Instant
    private var disconnectedAt: ContinuousClock.Instant?

    init(timing: BackendTiming, now: ContinuousClock.Instant) {
        self.timing = timing
        lastProgress = now
        disconnectedAt = now
    }

    var health: BackendHealth {
        isConnected && probeFailures < 2 && stalledUntil == nil && restOutUntil == nil ? .up : .down
    }

    mutating func connected(at now: ContinuousClock.Instant) {
        isConnected = true
        disconnectedAt = nil
        // A socket opened anew (ComfyUI restarted, perhaps mended): it may be tried at once.
        if restOutUntil != nil { endRestCooloff() }
        // The socket is back: the prompts are reconciled, which counts as news of them.
        lastProgress = now
    }

    mutating func disconnected(at now: ContinuousClock.Instant) {
        if isConnected { disconnectedAt = now }
        isConnected = false
    }

    mutating func probed(ok: Bool) {
        probeFailures = ok ? 0 : probeFailures + 1
    }

    /// A job's REST call got an answer of ComfyUI's own (`ok`), or none, or an error status.
    /// Returns whether this failure took the backend out.
    mutating func restCall(ok: Bool, at now: ContinuousClock.Instant) -> Bool {
        guard !ok else {
            restFailures = 0
            return false
        }
        restFailures += 1
        guard restFailures >= Self.restFailureLimit, restOutUntil == nil else { return false }
        restOutUntil = now + timing.restCooloff
        return true
    }

    /// Half-open: it takes jobs again, and the next failure takes it out again.
    private mutating func endRestCooloff() {
        restOutUntil = nil
        restFailures = Self.restFailureLimit - 1
    }

    /// ComfyUI says one of our prompts is running: a long silent node, not a stall.
    mutating func confirmedRunning(at now: ContinuousClock.Instant) {
        stalledUntil = nil
        lastProgress = now
    }

    /// An event about one of our prompts arrived.
    mutating func progressed(at now: ContinuousClock.Instant) {
        lastProgress = now
    }

    /// How many prompts the backend has in flight now.
    mutating func promptsInFlight(_ count: Int, at now: ContinuousClock.Instant) {
        if inFlight == 0, count > 0 { busySince = now }
        inFlight = count
    }

    /// The earliest moment at which `tick` could act or the health change by itself; `nil` when
    /// nothing is pending. Callers sleep until then (or until an event changes the state).
    var nextDeadline: ContinuousClock.Instant? {
        var deadlines: [ContinuousClock.Instant] = []
        if let stalledUntil { deadlines.append(stalledUntil) }
        if let restOutUntil { deadlines.append(restOutUntil) }
        if inFlight > 0 {
            if !isConnected, let disconnectedAt { deadlines.append(disconnectedAt + timing.failoverAfter) }
            if isConnected, stalledUntil == nil, let busySince { deadlines.append(max(busySince, lastProgress) + timing.stallTimeout) }
        }
        return deadlines.min()
    }

    /// Re-evaluates the timers; returns what to do with the prompts in flight.
    mutating func tick(at now: ContinuousClock.Instant) -> Action {
        if let until = stalledUntil, now >= until { stalledUntil = nil }
        if let until = restOutUntil, now >= until { endRestCooloff() }
        guard inFlight > 0 else { return .none }
        if !isConnected, let since = disconnectedAt, now - since >= timing.failoverAfter {
            // Once per drop: the moved prompts are gone, later ones start a new wait.
            disconnectedAt = now
            return .failOver
        }
        if isConnected, stalledUntil == nil, let busySince, now - max(busySince, lastProgress) >= timing.stallTimeout {
            stalledUntil = now + timing.stallTimeout
            return .stalled
        }
        return .none
    }
}
