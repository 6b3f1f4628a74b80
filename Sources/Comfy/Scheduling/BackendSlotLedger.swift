/// The backend slots of every gateway instance together: with several instances on one
/// ComfyUI backend, a prompt is submitted only while the slot it holds here is its own, so
/// no backend holds more than its capacity from all instances together.
public protocol BackendSlotLedger: Sendable {
    /// Waits until `backend` has a slot free among `capacity`, and takes it for `job` (a
    /// stored job's id, whose take-over moves the slot with it) of `owner`. Across instances,
    /// interactive work goes first (a batch job takes no slot while an interactive one waits for
    /// the backend) for at most `interactiveBurst` slots in a row while batch work waits,
    /// owners take turns (a freed slot goes to the waiting owner who holds the fewest), and an
    /// owner holds at most `ownerMaxRunning` slots of all backends together.
    func acquireSlot(
        backend: String, capacity: Int, job: String?, priority: JobPriority, owner: String, ownerMaxRunning: Int?, interactiveBurst: Int,
        deadline: ContinuousClock.Instant
    ) async throws -> BackendSlotTicket

    /// The slot a job holds that this instance took over with it, if any.
    func adoptSlot(of job: String) async -> BackendSlotTicket?

    func releaseSlot(_ ticket: BackendSlotTicket) async
}

extension BackendSlotLedger {
    func acquireSlot(
        backend: String, capacity: Int, job: String?, priority: JobPriority = .batch, owner: String = "", ownerMaxRunning: Int? = nil,
        deadline: ContinuousClock.Instant
    ) async throws -> BackendSlotTicket {
        try await acquireSlot(
            backend: backend, capacity: capacity, job: job, priority: priority, owner: owner, ownerMaxRunning: ownerMaxRunning,
            interactiveBurst: SchedulerConfiguration().interactiveBurst, deadline: deadline
        )
    }
}

/// One slot taken: released by its ticket, so a slot freed and taken again is not freed twice.
public struct BackendSlotTicket: Sendable, Equatable {
    public var backend: String
    public var ticket: String

    public init(backend: String, ticket: String) {
        self.backend = backend
        self.ticket = ticket
    }
}
