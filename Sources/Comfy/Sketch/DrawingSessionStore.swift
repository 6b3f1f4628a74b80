/// What a drawing session keeps beyond the instance that runs it: with several instances on
/// one shared job store, a painter whose instance died reconnects to another and goes on with
/// the same seed, style and prompt, and its last result. Sketches are not kept.
public struct DrawingSessionState: Sendable, Equatable {
    public var seed: UInt64
    public var style: String?
    public var prompt: String?
    public var latestResult: StoredImage?
    /// The API key the session belongs to (`DRAWING_AUTH`).
    public var owner: String?

    public init(seed: UInt64, style: String?, prompt: String?, latestResult: StoredImage?, owner: String? = nil) {
        self.seed = seed
        self.style = style
        self.prompt = prompt
        self.latestResult = latestResult
        self.owner = owner
    }
}

public protocol DrawingSessionStore: Sendable {
    /// The session as it was last saved, by any instance; `nil` if none (or unreadable).
    func drawingSession(_ id: String) async -> DrawingSessionState?
    /// Saves it; a failure is logged and forgotten (the session goes on in memory).
    func saveDrawingSession(_ id: String, _ state: DrawingSessionState) async
    /// The file names of every saved session's latest result, whichever instance made it.
    func drawingResultFilenames() async throws -> Set<String>
}
