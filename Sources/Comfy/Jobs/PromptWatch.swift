/// What the gateway has learned about one submitted prompt from ComfyUI's event stream.
///
/// A plain state machine: the backend feeds it events and asks it questions; it does no I/O.
struct PromptWatch: Sendable {
    /// An image the prompt produced, in arrival order.
    enum Product: Sendable, Equatable {
        case frame(node: String?, bytes: [UInt8], mimeType: String)
        case file(node: String, ComfyImageReference)

        var node: String? {
            switch self {
            case .frame(let node, _, _): node
            case .file(let node, _): node
            }
        }
    }

    /// How ComfyUI says the prompt ended.
    enum Ending: Sendable, Equatable {
        case success
        case failed(ComfyExecutionFailure)
        case interrupted
    }

    let promptID: String
    let job: PromptJob
    private(set) var products: [Product] = []
    private(set) var ending: Ending?
    /// The node ComfyUI is executing, to attribute legacy type-1 frames (they carry no node id).
    private(set) var currentNode: String?
    /// Set when the socket dropped while the prompt was in flight: events may be missing.
    var missedEvents = false
    /// How long ComfyUI's history says it ran, when it was settled from there.
    private(set) var executionMilliseconds: Int?
    private(set) var progress: Double = 0
    private var finishedNodes: Set<String> = []
    private var nodeFraction: Double = 0

    init(promptID: String, job: PromptJob) {
        self.promptID = promptID
        self.job = job
    }

    /// Applies one event for this prompt. Returns `true` when the progress value rose.
    @discardableResult
    mutating func apply(_ event: ComfyEvent) -> Bool {
        let before = progress
        switch event {
        case .executionCached(_, let nodes):
            finishedNodes.formUnion(nodes)
        case .executing(_, let node):
            if let currentNode { finishedNodes.insert(currentNode) }
            currentNode = node
            nodeFraction = 0
            // `executing null` is the end-of-prompt marker: it follows success, error and interrupt alike.
            if node == nil, ending == nil { ending = .success }
        case .progress(_, let node, let value, let max):
            if node == nil || node == currentNode, max > 0 {
                nodeFraction = Swift.min(1, Swift.max(0, value / max))
            }
        case .executed(_, let node, let images):
            products += images.map { .file(node: node, $0) }
        case .executionSuccess:
            ending = .success
        case .executionError(let failure):
            ending = .failed(failure)
        case .executionInterrupted:
            ending = .interrupted
        case .executionStart, .messageTooLarge, .other:
            break
        }
        let total = Double(Swift.max(job.workflow.count, 1))
        let estimate = (Double(finishedNodes.count) + nodeFraction) / total
        // Reaches 1 only with the result itself; never goes backwards.
        progress = Swift.max(progress, Swift.min(estimate, 0.99))
        return progress > before
    }

    /// A batch larger than this keeps its first images only: frames must not pile up in memory.
    static let maxImages = 64

    /// Records an image frame; `node` is known for type-4 frames, else the executing node.
    /// Only wanted frames of the first wanted node are kept, at most `maxImages`.
    mutating func apply(frameFrom node: String?, bytes: [UInt8], mimeType: String) {
        let frame = Product.frame(node: node ?? currentNode, bytes: bytes, mimeType: mimeType)
        let kept = products.filter { if case .frame = $0 { isWanted($0) } else { false } }
        guard isWanted(frame), kept.count < Self.maxImages, kept.first.map({ $0.node == frame.node }) ?? true else { return }
        products.append(frame)
    }

    /// Ends the watch from `/history` after events were missed: its files and how it ended.
    mutating func settle(_ ending: Ending, files: [String: [ComfyImageReference]], executionMilliseconds: Int? = nil) {
        self.executionMilliseconds = executionMilliseconds
        let known = Set(products.compactMap { if case .file(_, let reference) = $0 { reference.filename } else { nil } })
        for node in files.keys.sorted() {
            products += files[node, default: []].filter { !known.contains($0.filename) }.map { .file(node: node, $0) }
        }
        self.ending = ending
    }

    /// The image the job asked for, if it arrived.
    var wantedProduct: Product? {
        products.first(where: isWanted)
    }

    /// Every image of the node that gave the first wanted one, in order (a batch).
    var wantedProducts: [Product] {
        guard let first = wantedProduct else { return [] }
        return Array(products.filter { isWanted($0) && $0.node == first.node }.prefix(Self.maxImages))
    }

    private func isWanted(_ product: Product) -> Bool {
        switch product {
        case .frame(let node, _, let mimeType):
            if let wanted = job.outputNodeID { return node == wanted }
            // Without an explicit node, sampler previews (JPEG, from non-output nodes) are not results.
            return job.isWebSocketOutput(node) || (node == nil && mimeType == "image/png")
        case .file(let node, _):
            if let wanted = job.outputNodeID { return node == wanted }
            return true
        }
    }
}
