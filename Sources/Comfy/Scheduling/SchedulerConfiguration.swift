/// The scheduler's rules that an operator may change.
public struct SchedulerConfiguration: Sendable {
    /// Prompts one backend may hold at once: one running and one waiting keeps the GPU busy
    /// between jobs while ComfyUI's own queue stays shallow.
    public var capacityPerBackend: Int
    /// Jobs the gateway keeps waiting at most; beyond it new jobs are refused as busy.
    public var maxQueuedJobs: Int
    /// Drawing-session jobs go before generate jobs; when false the two take turns.
    public var interactiveFirst: Bool
    /// With `interactiveFirst`, how many drawing jobs may start in a row while generate jobs
    /// wait; then one generate job goes. The drawing API is public by default: without a bound,
    /// anonymous painters keeping sketches queued would stop every keyed caller's job.
    public var interactiveBurst: Int
    /// How many backends one job may be tried on (its first run included).
    public var maxAttempts: Int

    public init(capacityPerBackend: Int = 2, maxQueuedJobs: Int = 500, interactiveFirst: Bool = true, interactiveBurst: Int = 4, maxAttempts: Int = 3) {
        self.capacityPerBackend = max(1, capacityPerBackend)
        self.maxQueuedJobs = max(0, maxQueuedJobs)
        self.interactiveFirst = interactiveFirst
        self.interactiveBurst = max(1, interactiveBurst)
        self.maxAttempts = max(1, maxAttempts)
    }

    /// The run of interactive slots across instances before a waiting batch job's: taking
    /// turns is a run of one.
    var sharedInteractiveBurst: Int { interactiveFirst ? interactiveBurst : 1 }
}
