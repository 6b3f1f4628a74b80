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
