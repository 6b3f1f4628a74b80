/// A backend's health from what the gateway observes of it — its WebSocket, the
/// `/system_stats` probe, events about our prompts — as a state machine over an injected
/// clock: no sockets, no sleeping, so a table of timed events tests it whole.
///
/// Rules: up while the socket is connected, the probe has not failed twice in a row and the
/// backend is not stalled. Prompts in flight and no event about them for `stallTimeout`: the
/// backend is stalled for as long again and its prompts move. A socket down for
/// `failoverAfter` with prompts in flight: they move. A stall is only a suspicion until the
/// backend's queue is asked: if one of our prompts is running there, a node is just slow.
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
        isConnected && probeFailures < 2 && stalledUntil == nil ? .up : .down
    }

    mutating func connected(at now: ContinuousClock.Instant) {
        isConnected = true
        disconnectedAt = nil
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
        if inFlight > 0 {
            if !isConnected, let disconnectedAt { deadlines.append(disconnectedAt + timing.failoverAfter) }
            if isConnected, stalledUntil == nil, let busySince { deadlines.append(max(busySince, lastProgress) + timing.stallTimeout) }
        }
        return deadlines.min()
    }

    /// Re-evaluates the timers; returns what to do with the prompts in flight.
    mutating func tick(at now: ContinuousClock.Instant) -> Action {
        if let until = stalledUntil, now >= until { stalledUntil = nil }
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
