/// A prompt was not sent: the time its job's lease allows for sending it had passed (this
/// instance was paused or starved that long), so another instance may hold the job now and
/// submit it itself. The job is let go, not failed.
public struct SubmitWindowClosed: Error, Sendable {
    public init() {}
}
