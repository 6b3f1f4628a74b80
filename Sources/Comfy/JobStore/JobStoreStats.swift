import NIOConcurrencyHelpers

/// The store's counts for `/healthz` and `/metrics`, read from the database at most once a
/// second: health checks come often, and a count is a scan.
public final class JobStoreStats: Sendable {
    public struct Snapshot: Sendable {
        public var counts: JobCounts?
        public var sizeInBytes: Int
    }

    private struct State {
        var snapshot = Snapshot(counts: nil, sizeInBytes: 0)
        var readAt: ContinuousClock.Instant?
        var reading = false
    }

    private let store: any JobStore
    private let maxAge: Duration
    private let state = NIOLockedValueBox(State())

    public init(store: any JobStore, maxAge: Duration = .seconds(1)) {
        self.store = store
        self.maxAge = maxAge
    }

    /// The latest counts; one caller re-reads them when they are older than `maxAge`.
    public func snapshot() async -> Snapshot {
        let (cached, mustRead) = state.withLockedValue { state -> (Snapshot, Bool) in
            let stale = state.readAt.map { ContinuousClock.now - $0 > maxAge } ?? true
            let mustRead = stale && !state.reading
            if mustRead { state.reading = true }
            return (state.snapshot, mustRead)
        }
        guard mustRead else { return cached }
        let counts = try? await store.counts()
        let fresh = Snapshot(counts: counts, sizeInBytes: store.sizeInBytes())
        state.withLockedValue { state in
            state.snapshot = fresh
            state.readAt = .now
            state.reading = false
        }
        return fresh
    }
}
