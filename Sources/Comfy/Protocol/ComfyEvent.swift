/// One JSON text message from ComfyUI's `/ws`, decoded to what the gateway acts on.
///
/// The set and fields follow ComfyUI 0.3.x `server.py` / `execution.py` (the messages its `send_sync` calls send).
public enum ComfyEvent: Sendable, Equatable {
    case executionStart(promptID: String)
    case executionCached(promptID: String, nodes: [String])
    /// `node == nil` is the end-of-prompt marker. A replay to a late joiner carries no prompt id.
    case executing(promptID: String?, node: String?)
    case progress(promptID: String?, node: String?, value: Double, max: Double)
    /// A node with UI output finished; `images` lists the files it wrote (SaveImage, PreviewImage).
    case executed(promptID: String, node: String, images: [ComfyImageReference])
    case executionSuccess(promptID: String)
    case executionError(ComfyExecutionFailure)
    case executionInterrupted(promptID: String, node: String?, nodeType: String?)
    /// Not ComfyUI's: it sent a message larger than the gateway reads, dropped as it came
    /// (`WebSocketOversizedMessageSkipper`, `ComfyConnection`); it belongs to the prompt running then.
    case messageTooLarge(bytes: Int, binary: Bool)
    /// Anything else (`status`, `progress_state`, `feature_flags`, custom nodes' messages).
    case other(type: String)
}

/// A file ComfyUI wrote, addressable through `/view`.
public struct ComfyImageReference: Sendable, Equatable, Codable {
    public var filename: String
    public var subfolder: String
    public var type: String

    public init(filename: String, subfolder: String, type: String) {
        self.filename = filename
        self.subfolder = subfolder
        self.type = type
    }
}

/// What ComfyUI said when a node raised during execution (`execution_error`).
public struct ComfyExecutionFailure: Sendable, Equatable {
    public var promptID: String
    public var nodeID: String?
    public var nodeType: String?
    public var exceptionType: String?
    public var exceptionMessage: String

    public init(promptID: String, nodeID: String?, nodeType: String?, exceptionType: String?, exceptionMessage: String) {
        self.promptID = promptID
        self.nodeID = nodeID
        self.nodeType = nodeType
        self.exceptionType = exceptionType
        self.exceptionMessage = exceptionMessage
    }
}

extension ComfyEvent {
    /// Decodes one text frame; `nil` when it is not a ComfyUI message at all.
    public static func decode<Bytes: Collection>(_ bytes: Bytes) -> ComfyEvent? where Bytes.Element == UInt8 {
        // A type the gateway does not act on is known by its name, not parsed: ComfyUI's
        // `progress_state` alone is ten of a small prompt's 22 messages and most of their bytes.
        if let type = leadingType(bytes), !actedOnTypes.contains(type) { return .other(type: type) }
        guard let message = try? JSONValue.parse(bytes), let type = message["type"]?.stringValue else { return nil }
        let data = message["data"] ?? .null
        let promptID = data["prompt_id"]?.stringValue
        switch type {
        case "execution_start":
            guard let promptID else { return nil }
            return .executionStart(promptID: promptID)
        case "execution_cached":
            guard let promptID else { return nil }
            let nodes = data["nodes"]?.arrayValue?.compactMap(\.stringValue) ?? []
            return .executionCached(promptID: promptID, nodes: nodes)
        case "executing":
            return .executing(promptID: promptID, node: data["node"]?.stringValue)
        case "progress":
            return .progress(
                promptID: promptID,
                node: data["node"]?.stringValue,
                value: data["value"]?.doubleValue ?? 0,
                max: data["max"]?.doubleValue ?? 1
            )
        case "executed":
            guard let promptID, let node = data["node"]?.stringValue else { return nil }
            let images = (data["output"]?["images"]?.arrayValue ?? []).compactMap { image -> ComfyImageReference? in
                guard let filename = image["filename"]?.stringValue else { return nil }
                return ComfyImageReference(
                    filename: filename,
                    subfolder: image["subfolder"]?.stringValue ?? "",
                    type: image["type"]?.stringValue ?? "output"
                )
            }
            return .executed(promptID: promptID, node: node, images: images)
        case "execution_success":
            guard let promptID else { return nil }
            return .executionSuccess(promptID: promptID)
        case "execution_error":
            guard let promptID else { return nil }
            return .executionError(ComfyExecutionFailure(
                promptID: promptID,
                nodeID: data["node_id"]?.stringValue,
                nodeType: data["node_type"]?.stringValue,
                exceptionType: data["exception_type"]?.stringValue,
                exceptionMessage: data["exception_message"]?.stringValue ?? "execution failed"
            ))
        case "execution_interrupted":
            guard let promptID else { return nil }
            return .executionInterrupted(
                promptID: promptID,
                node: data["node_id"]?.stringValue,
                nodeType: data["node_type"]?.stringValue
            )
        default:
            return .other(type: type)
        }
    }

    /// The message types decoded in full; every other one is `.other`.
    static let actedOnTypes: Set<String> = [
        "execution_start", "execution_cached", "executing", "progress", "executed", "execution_success", "execution_error",
        "execution_interrupted",
    ]

    /// The type of a message laid out as ComfyUI's `send_json` writes it (`json.dumps` of
    /// `{"type": …, "data": …}`); `nil` for any other layout, which is then parsed in full.
    static func leadingType<Bytes: Collection>(_ bytes: Bytes) -> String? where Bytes.Element == UInt8 {
        let opening = #"{"type": ""#.utf8
        guard bytes.starts(with: opening) else { return nil }
        let rest = bytes.dropFirst(opening.count)
        guard let end = rest.prefix(64).firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        let name = rest[..<end]
        guard !name.contains(UInt8(ascii: "\\")) else { return nil }
        return String(decoding: name, as: UTF8.self)
    }

    /// Whether the event can change a prompt's state: other types cannot.
    var concernsAPrompt: Bool {
        if case .other = self { return false }
        return true
    }
}
