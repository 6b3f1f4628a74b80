/// Why a caller's workflow was refused before it reached ComfyUI, naming the node.
public struct WorkflowRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var nodeID: String
    public var classType: String
    /// The input concerned, when the problem is one value.
    public var input: String?
    public var message: String
    public var description: String { message }

    public init(nodeID: String, classType: String, input: String? = nil, message: String) {
        self.nodeID = nodeID
        self.classType = classType
        self.input = input
        self.message = message
    }
}
