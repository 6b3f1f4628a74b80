/// How uploads to an object store are retried: a few attempts with a short, doubling pause.
public struct UploadRetry: Sendable {
    /// Attempts in all, the first included.
    public var attempts: Int
    /// The pause after the first failed attempt; it doubles after each further one.
    public var backoff: Duration

    public init(attempts: Int = 3, backoff: Duration = .milliseconds(250)) {
        self.attempts = max(1, attempts)
        self.backoff = backoff
    }

    /// Runs `attempt` (given its 1-based number) until it returns `nil` (success), fails in a way
    /// not worth retrying, or the attempts run out; then returns the last failure and its number.
    func run(_ attempt: (Int) async -> UploadFailure?) async -> (failure: UploadFailure, attempts: Int)? {
        var pause = backoff
        for number in 1...attempts {
            guard let failure = await attempt(number) else { return nil }
            guard failure.retryable, number < attempts else { return (failure, number) }
            do {
                try await Task.sleep(for: pause)
            } catch {
                return (UploadFailure(message: "cancelled while retrying after: \(failure.message)", retryable: false), number)
            }
            pause *= 2
        }
        return nil
    }
}
