/// Whether a backend takes new jobs.
public enum BackendHealth: String, Sendable {
    /// Connected and answering: takes jobs.
    case up
    /// Unreachable, failing or stalled: takes none; its jobs are settled or moved.
    case down
    /// Shutting down: finishes what it has, takes nothing new.
    case draining
}
