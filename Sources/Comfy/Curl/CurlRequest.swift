/// An HTTP request for `CurlHTTPClient`.
public struct CurlRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?
    /// The whole exchange, connect to last byte.
    public var timeout: Duration
    /// `host:port:address` entries curl uses instead of resolving (`CURLOPT_RESOLVE`): the
    /// address a check approved is the one connected to.
    public var resolve: [String] = []
    /// No proxy from the environment (`http_proxy`): the address checked is the one reached.
    public var direct = false
    /// Given up when slower than this for this long (`CURLOPT_LOW_SPEED_*`): a trickle holds
    /// its thread no longer.
    public var minimumSpeed: (bytesPerSecond: Int, over: Duration)?
    /// A larger body fails the request (below the client's own limit).
    public var maxResponseBytes: Int?
    /// Not sent at all past this instant (`tooLate`): checked on the thread that sends it, just
    /// before it does, not before a wait for a free thread (a lease's window to submit a prompt).
    public var sendBy: ContinuousClock.Instant?
    /// The exchange ends by this instant, the wait for a free thread included: past it, it is
    /// not sent (`timedOut`); sent, it has what is left (or `timeout`, if that is shorter).
    public var deadline: ContinuousClock.Instant?

    public init(method: String = "GET", url: String, headers: [(String, String)] = [], body: [UInt8]? = nil, timeout: Duration = .seconds(30)) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}
