import Synchronization

/// How many requests that may wait long (generate calls, job submissions fetching input images)
/// are in progress at once: they must not take every FastCGI thread, or health checks, uploads
/// and results would wait behind them.
final class ConcurrencyLimit: Sendable {
    private let limit: Int
    private let current = Mutex(0)

    init(_ limit: Int) {
        self.limit = max(1, limit)
    }

    /// Runs `body` if there is room, else throws a 429 `busy` error.
    func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        let admitted = current.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
        guard admitted else {
            var error = APIError(.busy, "the service is busy: \(limit) generate calls and job submissions are in progress; try again shortly")
            error.headers.append(("Retry-After", "5"))
            throw error
        }
        defer { current.withLock { $0 -= 1 } }
        return try await body()
    }
}
