/// One painter's session: its settings, and the rule that the latest sketch always wins.
///
/// A plain state machine: at most one job runs and one waits; a newer sketch replaces the
/// waiting one. `DrawingSessions` performs the actions it returns.
struct SketchSession: Sendable {
    enum Action: Equatable, Sendable {
        case start
        case queued
        case replacedWaiting
    }

    let id: String
    /// The client that opened it (its address, or its IPv6 /64: `AddressShare`; "" when
    /// unknown): `MAX_SESSIONS_PER_CLIENT` counts by it.
    let client: String
    var seed: UInt64
    var style: String?
    var prompt: String?
    private(set) var isRunning = false
    private(set) var waiting: SketchUpdate?
    /// A sketch came (it may have failed); a session that never took one has nothing to keep.
    private(set) var tookSketch = false
    var latestResult: StoredImage?
    /// The API key the session belongs to (`SketchUpdate.owner`); `nil`: nobody's yet.
    var owner: String?
    var lastActivity: ContinuousClock.Instant
    let opened: ContinuousClock.Instant
    let broadcaster = SessionBroadcaster()
    /// Names the file its sketches go to in ComfyUI's input folder (`SketchSlots`).
    let sketchSlot: Int

    init(id: String, client: String = "", seed: UInt64, now: ContinuousClock.Instant, sketchSlot: Int) {
        self.id = id
        self.sketchSlot = sketchSlot
        self.client = client
        self.seed = seed
        self.lastActivity = now
        opened = now
    }

    /// A sketch arrived: run it now, or keep it as the one waiting (replacing an older one).
    mutating func submit(_ update: SketchUpdate) -> Action {
        tookSketch = true
        if isRunning {
            let replaced = waiting != nil
            waiting = update
            return replaced ? .replacedWaiting : .queued
        }
        isRunning = true
        return .start
    }

    /// The running job ended; returns the waiting sketch to run next, if any.
    mutating func finish() -> SketchUpdate? {
        guard let next = waiting else {
            isRunning = false
            return nil
        }
        waiting = nil
        return next
    }

    var isIdle: Bool { !isRunning && waiting == nil && broadcaster.count == 0 }

    /// Nothing a painter coming back would find: no sketch taken, no result, no settings.
    var holdsNothing: Bool { !isRunning && waiting == nil && !tookSketch && latestResult == nil && style == nil && prompt == nil }

    /// Idle and holding nothing: kept, it would only hold memory and a place under `MAX_SESSIONS`.
    var isBlank: Bool { isIdle && holdsNothing }
}
