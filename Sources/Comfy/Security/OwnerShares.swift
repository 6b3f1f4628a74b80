import NIOConcurrencyHelpers

/// Places on the resolver's threads for host lookups, shared out among owners (an API key, a
/// client address's share): a lookup that never answers holds its thread for the resolver's own
/// time, past its deadline, and one owner's domains timing out must not hold them all.
///
/// An owner has at most `perOwner` lookups running, and all together at most `capacity`. A
/// lookup without a place waits for one until its deadline; a freed place goes to the waiting
/// owner with the fewest running, so an owner running none gets the next even while others
/// keep asking.
final class LookupShares: Sendable {
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
        let id: UInt64? = state.withLockedValue { state in
            if state.canTake(owner, perOwner: perOwner, capacity: capacity) {
                state.take(owner)
                return nil
            }
            defer { state.nextID += 1 }
            return state.nextID
        }
        guard let id else { return true }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(until: deadline, tolerance: nil, clock: .continuous)
                self.withdraw(id)
            }
            defer { group.cancelAll() }
            return await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    let now: Bool? = state.withLockedValue { state in
                        if Task.isCancelled { return false }
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
