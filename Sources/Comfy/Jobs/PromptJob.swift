/// One workflow to run on a ComfyUI backend and the image wanted from it.
public struct PromptJob: Sendable {
    /// The ComfyUI API-format graph: node id → `{"class_type", "inputs"}`.
    public var workflow: [String: JSONValue]
    /// The node whose image is wanted; `nil` takes the first image the workflow produces.
    public var outputNodeID: String?
    /// The whole job, including retries after a lost backend (and, but for a stored job with
    /// a `queueDeadline`, its wait for a backend).
    public var timeout: Duration
    /// A stored job's: until this instant it waits for a backend, also while none that can run
    /// it is up (in the backends' line while none at all is; else told `waitsForBackend`, to
    /// wait in the runner), and its `timeout` counts from when a backend takes it. `nil`: a
    /// caller waits on the connection, and is told after `BackendTiming.unavailableAfter` that
    /// no backend is reachable.
    public var queueDeadline: ContinuousClock.Instant?
    /// Input images uploaded to the chosen backend before the prompt is submitted.
    public var uploads: [PromptUpload]
    /// Where progress and previews go while the job runs (`JobEvents`); finished when the job ends.
    public var events: AsyncStream<JobEvent>.Continuation?
    /// Called with each attempt's prompt id and backend before the prompt is submitted, so a
    /// stored job knows what to reconcile after a crash. Throwing stops the attempt. It returns
    /// the instant after which the prompt must not be sent any more, if there is one (past it,
    /// another gateway instance may hold the job and submit it too): `SubmitWindowClosed`.
    public var willSubmit: (@Sendable (_ promptID: String, _ backend: String) async throws -> ContinuousClock.Instant?)?
    /// A cancelled wait leaves the prompt on ComfyUI: a stored job's prompt outlives a stopping
    /// gateway and is reattached by the next one (whoever cancels the job removes it).
    public var keepsPromptWhenCancelled = false
    /// The prompt's history stays on ComfyUI after its end: a stored job's owner removes it once
    /// the end is stored, since until then an instance that takes the job over reads it there.
    public var keepsHistory = false
    /// The stored job this runs, if any: a shared store's backend slot is taken in its name.
    public var jobID: String?
    /// Nobody waits for the prompt once this process is gone (a painter's; a generate call's
    /// without an `Idempotency-Key`, cancelled at the next start): it carries the backend's
    /// `leftoverMark`, and the next process with that mark removes it from ComfyUI's queue.
    public var endsWithProcess = false

    public init(
        workflow: [String: JSONValue],
        outputNodeID: String?,
        timeout: Duration,
        uploads: [PromptUpload] = [],
        events: AsyncStream<JobEvent>.Continuation? = nil,
        willSubmit: (@Sendable (_ promptID: String, _ backend: String) async throws -> ContinuousClock.Instant?)? = nil
    ) {
        self.workflow = workflow
        self.outputNodeID = outputNodeID
        self.timeout = timeout
        self.uploads = uploads
        self.events = events
        self.willSubmit = willSubmit
    }

    /// The `class_type` of a node of the workflow.
    public func classType(of node: String?) -> String? {
        node.flatMap { workflow[$0]?["class_type"]?.stringValue }
    }

    /// Nodes that deliver their image as WebSocket frames rather than files.
    func isWebSocketOutput(_ node: String?) -> Bool {
        classType(of: node)?.lowercased().contains("websocket") ?? false
    }

}

/// An input image for ComfyUI's `/upload/image`, referenced by `LoadImage` as `subfolder/filename`.
public struct PromptUpload: Sendable {
    public var subfolder: String
    public var filename: String
    public var bytes: [UInt8]
    public var mimeType: String

    public init(subfolder: String, filename: String, bytes: [UInt8], mimeType: String) {
        self.subfolder = subfolder
        self.filename = filename
        self.bytes = bytes
        self.mimeType = mimeType
    }

    /// The value a `LoadImage` node's `image` input takes.
    public var loadImageName: String { subfolder.isEmpty ? filename : "\(subfolder)/\(filename)" }
}

/// One image's bytes and type.
public struct ImageData: Sendable, Equatable {
    public var bytes: [UInt8]
    public var mimeType: String

    public init(bytes: [UInt8], mimeType: String) {
        self.bytes = bytes
        self.mimeType = mimeType
    }
}

/// The images a job produced: every image of its output node, in order (a batch gives
/// several); `bytes` and `mimeType` are the first one's.
public struct GeneratedImage: Sendable {
    public var bytes: [UInt8]
    public var mimeType: String
    /// The batch's other images, after the first.
    public var others: [ImageData]
    public var promptID: String
    public var backend: String
    public var nodeID: String?
    /// How long ComfyUI ran it by its own history, when the result was read from there (its
    /// events, which time a run, went to another socket).
    public var executionMilliseconds: Int?

    public init(
        bytes: [UInt8], mimeType: String, others: [ImageData] = [], promptID: String, backend: String, nodeID: String?, executionMilliseconds: Int? = nil
    ) {
        self.bytes = bytes
        self.mimeType = mimeType
        self.others = others
        self.promptID = promptID
        self.backend = backend
        self.nodeID = nodeID
        self.executionMilliseconds = executionMilliseconds
    }

    /// Every image, the first included.
    public var all: [ImageData] { [ImageData(bytes: bytes, mimeType: mimeType)] + others }
}
