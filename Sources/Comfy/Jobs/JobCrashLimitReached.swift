/// A job was running each time the gateway process ended without ending it (a crash, a kill)
/// `crashes` times: it may be what kills it, so it is not taken up again but failed. Else one
/// such job keeps the gateway in a crash loop, restarted by its supervisor for ever.
public struct JobCrashLimitReached: Error, Sendable, CustomStringConvertible {
    public var crashes: Int

    public init(crashes: Int) {
        self.crashes = crashes
    }

    public var description: String {
        "the gateway process ended \(crashes) times while this job ran, so it is not run again; if it keeps happening, tell the operator"
    }
}
