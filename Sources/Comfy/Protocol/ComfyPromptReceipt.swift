/// ComfyUI's answer to an accepted `POST /prompt`.
public struct ComfyPromptReceipt: Sendable, Equatable {
    public var promptID: String
    /// Non-empty on a *partially* valid prompt: its invalid outputs were dropped silently.
    public var nodeErrors: [String: JSONValue]

    /// Output nodes ComfyUI dropped because a node they depend on failed validation.
    public var droppedOutputs: Set<String> {
        Set(nodeErrors.values.flatMap { $0["dependent_outputs"]?.arrayValue?.compactMap(\.stringValue) ?? [] })
    }

    public init(promptID: String, nodeErrors: [String: JSONValue]) {
        self.promptID = promptID
        self.nodeErrors = nodeErrors
    }
}
