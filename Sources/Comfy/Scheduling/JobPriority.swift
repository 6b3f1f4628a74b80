/// How urgent a job is: a painter watching the canvas, or a caller of the generate API.
public enum JobPriority: String, Sendable, CaseIterable {
    /// Drawing-session generations: someone is watching.
    case interactive
    /// `/api/generate` and `/api/generate_file`.
    case batch
}
