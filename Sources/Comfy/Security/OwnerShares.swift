import NIOConcurrencyHelpers

/// Places on a pool of threads shared out among their callers (an API key, a client address's
/// share): host lookups of callers' URLs, whose thread a name that never answers holds for the
/// resolver's own time, past their deadline; fetches of input image URLs, whose thread a
/// trickling server holds. One caller's slow names or servers must not hold them all.
///
/// An owner has at most `perOwner` places, and all together at most `capacity`. A call without
/// a place waits for one until its deadline; a freed place goes to the waiting owner with the
/// fewest running, so an owner running none gets the next even while others keep asking.
final class OwnerShares: Sendable {
    let perOwner: Int
    let capacity: Int

    private struct Waiter {
        var id: UInt64
        var owner: String
        var continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var running: [String: Int] = [:]
        var total = 0
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0

        func canTake(_ owner: String, perOwner: Int, capacity: Int) -> Bool {
            running[owner, default: 0] < perOwner && total < capacity
        }

        mutating func take(_ owner: String) {
            running[owner, default: 0] += 1
            total += 1
        }
    }

    private let state = NIOLockedValueBox(State())

    init(perOwner: Int, capacity: Int) {
        self.perOwner = perOwner
        self.capacity = capacity
    }

    /// Takes a place for `owner`'s lookup, waiting for one until `deadline`; `false` when none
    /// came in time (or the task was cancelled).
    func acquire(_ owner: String, by deadline: ContinuousClock.Instant) async -> Bool {
        let (perOwner, capacity) = (self.perOwner, self.capacity)
        enum Start {
            case taken
            case late
            case waits(UInt64)
        }
        let start: Start = state.withLockedValue { state in
            if state.canTake(owner, perOwner: perOwner, capacity: capacity) {
                state.take(owner)
                return .taken
            }
            guard ContinuousClock.now < deadline else { return .late }
            defer { state.nextID += 1 }
            return .waits(state.nextID)
        }
        let id: UInt64
        switch start {
        case .taken: return true
        case .late: return false
        case .waits(let waiting): id = waiting
        }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(until: deadline, tolerance: nil, clock: .continuous)
                self.withdraw(id)
            }
            defer { group.cancelAll() }
            return await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let now: Bool? = state.withLockedValue { state in
                        // Past the deadline, the timer may have withdrawn before this was added.
                        if Task.isCancelled || ContinuousClock.now >= deadline { return false }
                        if state.canTake(owner, perOwner: perOwner, capacity: capacity) {
                            state.take(owner)
                            return true
                        }
                        state.waiters.append(Waiter(id: id, owner: owner, continuation: continuation))
                        return nil
                    }
                    if let now { continuation.resume(returning: now) }
                }
            } onCancel: {
                self.withdraw(id)
            }
        }
    }

    /// `owner`'s lookup is done (its thread is free): the place goes to a waiting lookup.
    func done(_ owner: String) {
        let (perOwner, capacity) = (self.perOwner, self.capacity)
        let next: Waiter? = state.withLockedValue { state in
            assert(state.running[owner] != nil, "a place given back that was not taken")
            state.running[owner, default: 1] -= 1
            if state.running[owner] == 0 { state.running[owner] = nil }
            state.total -= 1
            let eligible = state.waiters.indices.filter { state.canTake(state.waiters[$0].owner, perOwner: perOwner, capacity: capacity) }
            guard let index = eligible.min(by: { state.running[state.waiters[$0].owner, default: 0] < state.running[state.waiters[$1].owner, default: 0] }) else {
                return nil
            }
            let waiter = state.waiters.remove(at: index)
            state.take(waiter.owner)
            return waiter
        }
        next?.continuation.resume(returning: true)
    }

    /// A waiting lookup gives up (its deadline, or cancelled), unless a place reached it first.
    private func withdraw(_ id: UInt64) {
        let waiter: Waiter? = state.withLockedValue { state in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.continuation.resume(returning: false)
    }

    /// Lookups running, all owners together.
    var total: Int { state.withLockedValue { $0.total } }
}
