import NIOConcurrencyHelpers

/// Runs `operation` until `deadline`: past it, the operation's task is cancelled and `timeout()`
/// is thrown. The one timeout helper of the gateway; the operation must end when cancelled
/// (the waits of `WaiterTable` do).
public func withDeadline<Result: Sendable, C: Clock>(
    _ deadline: C.Instant,
    clock: C,
    timeout: @escaping @Sendable () -> any Error,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result where C.Duration == Duration {
    try await withThrowingTaskGroup(of: Result.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await clock.sleep(until: deadline, tolerance: nil)
            throw timeout()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// `withDeadline` on the continuous clock.
public func withDeadline<Result: Sendable>(
    _ deadline: ContinuousClock.Instant,
    timeout: @escaping @Sendable () -> any Error,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    try await withDeadline(deadline, clock: ContinuousClock(), timeout: timeout, operation)
}

/// Like `withDeadline`, for an operation that may not end when cancelled (a query already sent
/// on a connection whose server died): past the deadline the caller gets `timeout()` at once,
/// and the operation, cancelled, finishes on its own later. The first outcome wins.
public func withAbandonableDeadline<Result: Sendable>(
    _ deadline: ContinuousClock.Instant,
    timeout: @escaping @Sendable () -> any Error,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    let race = DeadlineRace<Result>()
    let work = Task {
        do {
            race.finish(.success(try await operation()))
        } catch {
            race.finish(.failure(error))
        }
    }
    let timer = Task {
        try await Task.sleep(until: deadline, tolerance: nil, clock: .continuous)
        work.cancel()
        race.finish(.failure(timeout()))
    }
    defer { timer.cancel() }
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { race.wait(with: $0) }
    } onCancel: {
        work.cancel()
        race.finish(.failure(CancellationError()))
    }
}

/// The outcome of `withAbandonableDeadline`: whichever comes first, before or after its waiter.
private final class DeadlineRace<Result: Sendable>: Sendable {
    private struct State {
        var outcome: Swift.Result<Result, any Error>?
        var waiter: CheckedContinuation<Result, any Error>?
        var done = false
    }

    private let state = NIOLockedValueBox(State())

    func finish(_ outcome: Swift.Result<Result, any Error>) {
        let waiter: CheckedContinuation<Result, any Error>? = state.withLockedValue { state in
            guard !state.done, state.outcome == nil else { return nil }
            guard let waiter = state.waiter else {
                state.outcome = outcome
                return nil
            }
            state.done = true
            state.waiter = nil
            return waiter
        }
        waiter?.resume(with: outcome)
    }

    func wait(with waiter: CheckedContinuation<Result, any Error>) {
        let ready: Swift.Result<Result, any Error>? = state.withLockedValue { state in
            guard let outcome = state.outcome else {
                state.waiter = waiter
                return nil
            }
            state.done = true
            return outcome
        }
        if let ready { waiter.resume(with: ready) }
    }
}
