import Synchronization

/// Tasks waiting for a value by key: a prompt's ending, a job's backend slot.
///
/// A result that arrives before its waiter is kept until it comes, and a cancelled waiter is
/// resumed at once with `CancellationError`, from the cancelling thread: no task is spawned
/// to deliver either.
public final class WaiterTable<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct State {
        var waiters: [Key: CheckedContinuation<Value, any Error>] = [:]
        var early: [Key: Result<Value, any Error>] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Suspends until `resume(key, with:)`, or until the task is cancelled.
    public func wait(for key: Key) async throws -> Value {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let early: Result<Value, any Error>? = state.withLock { state in
                    if let result = state.early.removeValue(forKey: key) { return result }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters[key] = continuation
                    return nil
                }
                if let early { continuation.resume(with: early) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: key) }?.resume(throwing: CancellationError())
        }
    }

    /// Waits as `wait(for:)` does, at most until `deadline`; `nil` when it passed first, the task
    /// was cancelled, or the result was an error.
    public func wait(for key: Key, until deadline: ContinuousClock.Instant) async -> Value? {
        try? await withDeadline(deadline, timeout: { CancellationError() }) { try await self.wait(for: key) }
    }

    /// Hands `result` to the key's waiter, or keeps it for the waiter to come when `keep`.
    /// Returns whether a waiter took it.
    @discardableResult
    public func resume(_ key: Key, with result: Result<Value, any Error>, keep: Bool = true) -> Bool {
        let waiter: CheckedContinuation<Value, any Error>? = state.withLock { state in
            if let waiter = state.waiters.removeValue(forKey: key) { return waiter }
            if keep { state.early[key] = result }
            return nil
        }
        waiter?.resume(with: result)
        return waiter != nil
    }

    /// The result kept for the key, taken; `nil` when none came yet (then `wait` waits for it).
    public func takeKept(_ key: Key) -> Result<Value, any Error>? {
        state.withLock { $0.early.removeValue(forKey: key) }
    }

    /// Whether a task waits for the key now.
    public func isWaiting(for key: Key) -> Bool {
        state.withLock { $0.waiters[key] != nil }
    }

    /// Forgets a kept result nobody will wait for.
    public func discard(_ key: Key) {
        _ = state.withLock { $0.early.removeValue(forKey: key) }
    }

    /// The keys waited for now.
    public var waitingKeys: [Key] { state.withLock { Array($0.waiters.keys) } }
}
