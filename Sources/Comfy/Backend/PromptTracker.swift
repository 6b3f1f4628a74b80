/// The prompts this gateway has in flight on one backend, and which event or frame belongs to
/// which: a plain state machine fed with what the socket hears, returning what the backend
/// must do. No I/O, so a table of events and expected effects tests it whole.
struct PromptTracker: Sendable {
    struct Slot: Sendable {
        var watch: PromptWatch
        /// The client id the prompt was submitted under.
        var clientID: String
    }

    /// What the backend does after an input.
    enum Effect: Sendable, Equatable {
        /// Something about one of our prompts arrived: the backend is not stalled.
        case activity
        /// The prompt's progress rose.
        case progressed(promptID: String, Double)
        /// ComfyUI began executing the prompt (GPU time counts from here).
        case started(promptID: String)
        /// A sampler's latent preview for the prompt's job.
        case preview(promptID: String, bytes: [UInt8], mimeType: String)
        /// The prompt ended (its watch has the outcome): hand it to its waiter.
        case ended(promptID: String)
        /// Events may have been missed: settle these prompts from `/history`.
        case reconcile([String])
        /// ComfyUI sent a message too large to read (an image, a node's output): the prompt
        /// running then, if it is ours, cannot end well, so it is stopped and fails.
        case messageTooLarge(promptID: String?, bytes: Int)
    }

    private(set) var slots: [String: Slot] = [:]
    /// The id of the open socket; `nil` while disconnected.
    private(set) var clientID: String?
    /// The prompt ComfyUI is running for us, to attribute frames that carry no prompt id.
    private var runningPromptID: String?

    var count: Int { slots.count }
    var isConnected: Bool { clientID != nil }
    func slot(_ promptID: String) -> Slot? { slots[promptID] }

    mutating func track(_ watch: PromptWatch, clientID: String) {
        slots[watch.promptID] = Slot(watch: watch, clientID: clientID)
    }

    /// Forgets the prompt (it ended and was handed over, failed, or was abandoned).
    @discardableResult
    mutating func remove(_ promptID: String) -> Slot? {
        slots.removeValue(forKey: promptID)
    }

    mutating func connected(_ clientID: String) -> [Effect] {
        self.clientID = clientID
        let stale = slots.filter { $0.value.clientID != clientID || $0.value.watch.missedEvents }.map(\.key).sorted()
        return stale.isEmpty ? [] : [.reconcile(stale)]
    }

    mutating func disconnected() {
        clientID = nil
        runningPromptID = nil
        for key in slots.keys { slots[key]?.watch.missedEvents = true }
    }

    mutating func apply(_ event: ComfyEvent) -> [Effect] {
        let promptID: String?
        switch event {
        case .executionStart(let id), .executionCached(let id, _), .executionSuccess(let id), .executionInterrupted(let id, _, _), .executed(let id, _, _):
            promptID = id
        case .executionError(let failure):
            promptID = failure.promptID
        case .executing(let id, let node):
            // A replay to a late joiner has no prompt id: it belongs to the running prompt.
            promptID = id ?? runningPromptID
            runningPromptID = node == nil ? nil : promptID
        case .progress(let id, _, _, _):
            promptID = id ?? runningPromptID
        case .messageTooLarge(let bytes, _):
            guard let running = runningPromptID, slots[running] != nil else { return [.messageTooLarge(promptID: nil, bytes: bytes)] }
            return [.activity, .messageTooLarge(promptID: running, bytes: bytes)]
        case .other:
            promptID = nil
        }
        guard let promptID, var slot = slots[promptID] else { return [] }
        var effects: [Effect] = [.activity]
        if case .executionStart = event { effects.append(.started(promptID: promptID)) }
        if slot.watch.apply(event) { effects.append(.progressed(promptID: promptID, slot.watch.progress)) }
        slots[promptID] = slot
        if slot.watch.ending != nil { effects.append(.ended(promptID: promptID)) }
        return effects
    }

    mutating func apply(_ frame: ComfyBinaryFrame) -> [Effect] {
        switch frame {
        case .imageWithMetadata(let promptID, let nodeID, let mimeType, let bytes):
            guard let promptID = promptID ?? runningPromptID else { return [] }
            return record(bytes, mimeType: mimeType ?? sniffMimeType(bytes), node: nodeID, promptID: promptID)
        case .image(let format, let bytes):
            guard let promptID = runningPromptID else { return [] }
            let mimeType = format == .jpeg ? "image/jpeg" : format == .png ? "image/png" : sniffMimeType(bytes)
            return record(bytes, mimeType: mimeType, node: nil, promptID: promptID)
        case .text, .unknown:
            return []
        }
    }

    /// Ends the prompt from `/history` (after missed events).
    mutating func settle(
        _ promptID: String, _ ending: PromptWatch.Ending, files: [String: [ComfyImageReference]], executionMilliseconds: Int? = nil
    ) -> [Effect] {
        guard slots[promptID] != nil else { return [] }
        slots[promptID]?.watch.settle(ending, files: files, executionMilliseconds: executionMilliseconds)
        return [.ended(promptID: promptID)]
    }

    /// Keeps a result frame; a sampler's latent preview (JPEG, from a non-output node) goes to the job.
    private mutating func record(_ bytes: [UInt8], mimeType: String, node: String?, promptID: String) -> [Effect] {
        guard var slot = slots[promptID] else { return [] }
        let node = node ?? slot.watch.currentNode
        if mimeType == "image/jpeg", !slot.watch.job.isWebSocketOutput(node) {
            return [.activity, .preview(promptID: promptID, bytes: bytes, mimeType: mimeType)]
        }
        slot.watch.apply(frameFrom: node, bytes: bytes, mimeType: mimeType)
        slots[promptID] = slot
        return [.activity]
    }
}

/// Guesses an image's type from its first bytes.
func sniffMimeType(_ bytes: [UInt8]) -> String {
    if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return "image/png" }
    if bytes.starts(with: [0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
    if bytes.count >= 12, bytes.starts(with: Array("RIFF".utf8)), Array(bytes[8..<12]) == Array("WEBP".utf8) { return "image/webp" }
    if bytes.starts(with: Array("GIF8".utf8)) { return "image/gif" }
    return "application/octet-stream"
}
