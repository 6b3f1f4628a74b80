/// A workflow file of `WORKFLOW_DIR`: always a tool (`WorkflowTool`), and a drawing style when
/// it has a `LoadImage` node for the sketch.
public struct StyleWorkflow: Sendable, Equatable {
    public var name: String
    public var workflow: [String: JSONValue]
    public var tool: WorkflowTool

    /// Why a workflow file cannot be a style.
    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Validates a workflow file's bytes.
    public init(name: String, bytes: [UInt8]) throws(Problem) {
        let parsed: JSONValue
        do {
            parsed = try JSONValue.parse(bytes)
        } catch {
            throw Problem(description: "not valid JSON")
        }
        guard let workflow = parsed.objectValue, !workflow.isEmpty else { throw Problem(description: "not a JSON object of nodes") }
        if workflow["nodes"]?.arrayValue != nil || workflow["links"] != nil {
            throw Problem(description: "UI-format workflow; in ComfyUI use Workflow → Export (API) and save that file instead")
        }
        for (id, node) in workflow where node["class_type"]?.stringValue == nil {
            throw Problem(description: "node \(id) has no class_type (not an API-format workflow)")
        }
        self.name = name
        self.workflow = workflow
        do {
            tool = try WorkflowTool(name: name, workflow: workflow, order: Self.ordered(workflow.keys))
        } catch {
            throw Problem(description: error.description)
        }
    }

    /// Whether the drawing API can use it: it has a node to receive the sketch.
    public var isStyle: Bool { sketchNodeID != nil }

    /// The `LoadImage` node that receives the sketch: the one titled `sketch`, else the first by id.
    public var sketchNodeID: String? {
        let loaders = orderedNodeIDs.filter { workflow[$0]?["class_type"]?.stringValue == "LoadImage" }
        return loaders.first { workflow[$0]?["_meta"]?["title"]?.stringValue?.lowercased() == "sketch" } ?? loaders.first
    }

    /// Node ids in numeric order where they are numbers ("2" before "10").
    var orderedNodeIDs: [String] { Self.ordered(workflow.keys) }

    static func ordered(_ ids: some Sequence<String>) -> [String] {
        ids.sorted { lhs, rhs in
            switch (Int(lhs), Int(rhs)) {
            case let (left?, right?): left < right
            case (.some, nil): true
            case (nil, .some): false
            default: lhs < rhs
            }
        }
    }

    /// Style names are file names: letters, digits, `-` and `_`, at most 64.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
    }
}
