/// How long the supervisor waits before it starts a stopped app again.
///
/// An app that ran a while and stopped is started again at once (the API is down until it
/// listens). One that keeps stopping soon after its start waits twice as long each time, up to
/// `longest`: a crash loop (a database that is down, a full disk) neither spins the CPU nor
/// floods the log, and the gateway comes back by itself once the cause is gone.
public struct RestartBackoff: Sendable, Equatable {
    /// A run at least this long ends a streak of quick stops.
    public static let steadyRun: Duration = .seconds(60)
    public static let first: Duration = .seconds(1)
    public static let longest: Duration = .seconds(30)

    /// Quick stops in a row, the one before this streak's first restart included.
    public private(set) var quickStops = 0

    public init() {}

    /// The pause before the next start, after a run of `ran`.
    public mutating func pause(afterRunning ran: Duration) -> Duration {
        if ran >= Self.steadyRun { quickStops = 0 }
        quickStops += 1
        guard quickStops > 1 else { return .zero }
        // 1 s, 2 s, 4 s ... without overflowing however long the streak.
        let doublings = min(quickStops - 2, 5)
        return min(Self.first * (1 << doublings), Self.longest)
    }
}
