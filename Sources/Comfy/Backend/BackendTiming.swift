/// How quickly a backend is judged failed, and how its health is probed.
public struct BackendTiming: Sendable {
    /// A dropped WebSocket that stays down this long fails the backend's jobs over to others.
    public var failoverAfter: Duration
    /// How often `/system_stats` is asked (the light probe).
    public var probeInterval: Duration
    /// Prompts in flight with no event about them for this long: the backend is stalled; its
    /// prompts are removed there and run elsewhere, and it takes no jobs for as long again.
    public var stallTimeout: Duration
    /// No backend up for this long: jobs get a 503 at once instead of waiting their timeout.
    public var unavailableAfter: Duration
    /// ComfyUI's WebSocket silent this long is pinged; silent as long again, it is taken for
    /// dropped (a GPU server that lost power leaves no close behind) and opened anew.
    public var pingInterval: Duration
    /// A job's REST calls (`/upload/image`, `/prompt`, `/view`) failing three times in a row
    /// take the backend out for this long, while its socket and `/system_stats` look fine.
    public var restCooloff: Duration

    public init(
        failoverAfter: Duration = .seconds(10), probeInterval: Duration = .seconds(5), stallTimeout: Duration = .seconds(180),
        unavailableAfter: Duration = .seconds(3), pingInterval: Duration = .seconds(15), restCooloff: Duration = .seconds(30)
    ) {
        self.restCooloff = restCooloff
        self.failoverAfter = failoverAfter
        self.pingInterval = pingInterval
        self.unavailableAfter = unavailableAfter
        self.probeInterval = probeInterval
        self.stallTimeout = stallTimeout
    }
}
