/// A workflow file as a typed tool: named parameters, each bound to node inputs of the graph.
///
/// Parameters are declared in the workflow: a node titled `input:<name>` exposes one of its
/// inputs (its main widget, or `_meta.widget`), with an optional `type`, `default`,
/// `description`, `minimum` and `maximum` in `_meta`. A workflow that declares none gets the
/// common ones found in its graph: the positive and negative prompt, the seed, steps, width,
/// height and the `LoadImage` image.
public struct WorkflowTool: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case string, integer, number, boolean
        /// An input image: an `https://` URL, a data URL or base64, uploaded to the backend.
        case image
    }

    /// One node input a parameter writes.
    public struct Target: Sendable, Hashable {
        public var nodeID: String
        public var input: String

        public init(nodeID: String, input: String) {
            self.nodeID = nodeID
            self.input = input
        }
    }

    public struct Parameter: Sendable, Equatable {
        public var name: String
        public var kind: Kind
        /// Every input the value goes to (a seed reaches every sampler).
        public var targets: [Target]
        /// The workflow's own value; `nil` makes the parameter required.
        public var defaultValue: JSONValue?
        public var description: String
        public var minimum: Double?
        public var maximum: Double?
        public var required: Bool { defaultValue == nil }
    }

    /// Why a workflow's declarations cannot make a tool.
    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    public let name: String
    /// The graph the parameters are written into.
    public let workflow: [String: JSONValue]
    public let parameters: [Parameter]
    /// The node titled `output`, else `nil` (the first image the workflow produces).
    public let outputNodeID: String?

    /// Body fields of a tool call that are not parameters.
    public static let reservedNames: Set<String> = ["response_type", "output_format", "quality", "webhook_url", "async", "index"]
    /// A prompt longer than this is a mistake or an attack, not a prompt.
    public static let maxStringLength = 20_000

    init(name: String, workflow: [String: JSONValue], order: [String]) throws(Problem) {
        self.name = name
        self.workflow = workflow
        var declared: [Parameter] = []
        for id in order {
            guard let node = workflow[id], let title = node["_meta"]?["title"]?.stringValue, title.lowercased().hasPrefix("input:") else { continue }
            let parameter = try Self.declared(String(title.dropFirst("input:".count)), node: node, id: id)
            guard !declared.contains(where: { $0.name == parameter.name }) else {
                throw Problem(description: "two nodes declare the parameter \(parameter.name)")
            }
            declared.append(parameter)
        }
        parameters = declared.isEmpty ? Self.inferred(workflow, order: order) : declared
        outputNodeID = order.first { workflow[$0]?["_meta"]?["title"]?.stringValue?.lowercased() == "output" }
    }

    /// Parameter names are identifiers an LLM tool call and an OpenAPI schema both take.
    public static func isValidParameterName(_ name: String) -> Bool {
        guard let first = name.utf8.first, (0x61...0x7A).contains(first) || (0x41...0x5A).contains(first) else { return false }
        return name.utf8.count <= 64 && name.utf8.allSatisfy { (0x61...0x7A).contains($0) || (0x41...0x5A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
    }

    /// The input a node class is usually driven by.
    static let mainWidgets: [String: String] = [
        "CLIPTextEncode": "text", "KSampler": "seed", "KSamplerAdvanced": "noise_seed", "RandomNoise": "noise_seed",
        "LoadImage": "image", "LoadImageMask": "image", "EmptyLatentImage": "width", "EmptyImage": "width",
        "CheckpointLoaderSimple": "ckpt_name", "LoraLoader": "strength_model", "PrimitiveNode": "value",
        "PrimitiveString": "value", "PrimitiveInt": "value", "PrimitiveFloat": "value", "PrimitiveBoolean": "value",
    ]

    /// ComfyUI's own limits for common inputs (`nodes.py`), unless the workflow declares others.
    static let knownRanges: [String: ClosedRange<Double>] = [
        // Dify and JavaScript hold numbers as doubles: a tool's seed past 2^53 would not be the one sent.
        "seed": 0...9_007_199_254_740_991, "noise_seed": 0...9_007_199_254_740_991,
        "steps": 1...10_000, "width": 16...16_384, "height": 16...16_384, "batch_size": 1...64,
        "cfg": 0...100, "denoise": 0...1,
    ]

    private static func declared(_ name: String, node: JSONValue, id: String) throws(Problem) -> Parameter {
        guard isValidParameterName(name), !reservedNames.contains(name) else {
            throw Problem(description: "node \(id) declares \"\(name)\", which is not a usable parameter name (letters, digits and _, not \(reservedNames.sorted().joined(separator: ", ")))")
        }
        let meta = node["_meta"]
        let classType = node["class_type"]?.stringValue ?? ""
        let inputs = node["inputs"]?.objectValue ?? [:]
        let widget: String
        if let chosen = meta?["widget"]?.stringValue {
            widget = chosen
        } else if inputs[name] != nil, !isLink(inputs[name]) {
            widget = name
        } else if let main = mainWidgets[classType] {
            widget = main
        } else if case let values = inputs.filter({ !isLink($0.value) }), values.count == 1, let only = values.first?.key {
            widget = only
        } else {
            throw Problem(description: "node \(id) (\(classType)) declares \(name) but has no main input; name one in _meta.widget")
        }
        guard let current = inputs[widget], !isLink(current) else {
            throw Problem(description: "node \(id) declares \(name) on input \(widget), which it does not have as a value")
        }
        let kind: Kind
        if let text = meta?["type"]?.stringValue {
            guard let declaredKind = Kind(rawValue: text) else {
                throw Problem(description: "node \(id) gives \(name) the type \"\(text)\"; use string, integer, number, boolean or image")
            }
            kind = declaredKind
        } else {
            kind = inferredKind(of: current, classType: classType, input: widget)
        }
        var defaultValue: JSONValue? = meta?["default"] ?? current
        // An image's own value is a file on the GPU server, not something a caller can pass.
        if kind == .image { defaultValue = meta?["default"] }
        // `"default": null` says there is none: the caller must give it.
        if defaultValue == .null || meta?["required"]?.boolValue == true { defaultValue = nil }
        let range = knownRanges[widget]
        return Parameter(
            name: name, kind: kind, targets: [Target(nodeID: id, input: widget)], defaultValue: defaultValue,
            description: meta?["description"]?.stringValue ?? describe(name, kind: kind),
            minimum: meta?["minimum"]?.doubleValue ?? range?.lowerBound, maximum: meta?["maximum"]?.doubleValue ?? range?.upperBound
        )
    }

    private static func inferredKind(of value: JSONValue, classType: String, input: String) -> Kind {
        if NodePolicy.loaderClasses.contains(classType) && NodePolicy.uploadInputs.contains(input) { return .image }
        switch value {
        case .bool: return .boolean
        case .number(let number): return number.rounded() == number && !["cfg", "denoise"].contains(input) ? .integer : .number
        case .largeInteger: return .integer
        default: return .string
        }
    }

    /// The common parameters of a workflow that declares none.
    private static func inferred(_ workflow: [String: JSONValue], order: [String]) -> [Parameter] {
        func classType(_ id: String) -> String? { workflow[id]?["class_type"]?.stringValue }
        func value(_ id: String, _ input: String) -> JSONValue? {
            guard let value = workflow[id]?["inputs"]?[input], !isLink(value) else { return nil }
            return value
        }
        func parameter(_ name: String, _ kind: Kind, _ targets: [Target], _ description: String) -> Parameter? {
            guard let first = targets.first else { return nil }
            let range = knownRanges[first.input]
            let current = kind == .image ? nil : value(first.nodeID, first.input)
            return Parameter(name: name, kind: kind, targets: targets, defaultValue: current, description: description, minimum: range?.lowerBound, maximum: range?.upperBound)
        }
        let samplers = order.filter { ["KSampler", "KSamplerAdvanced", "SamplerCustom"].contains(classType($0) ?? "") }
        let encoders = Set(order.filter { classType($0) == "CLIPTextEncode" })
        func encoder(_ role: String) -> String? {
            if let titled = order.first(where: { encoders.contains($0) && workflow[$0]?["_meta"]?["title"]?.stringValue?.lowercased() == role }) { return titled }
            for sampler in samplers {
                if let source = workflow[sampler]?["inputs"]?[role]?.arrayValue?.first?.stringValue, encoders.contains(source) { return source }
            }
            return nil
        }
        let seeds = order.flatMap { id in ["seed", "noise_seed"].compactMap { value(id, $0)?.doubleValue != nil ? Target(nodeID: id, input: $0) : nil } }
        let steps = samplers.first.flatMap { value($0, "steps") != nil ? Target(nodeID: $0, input: "steps") : nil }
        let latent = order.first { ["EmptyLatentImage", "EmptyImage", "EmptySD3LatentImage"].contains(classType($0) ?? "") }
        let loaders = order.filter { classType($0) == "LoadImage" && value($0, "image") != nil }
        let image = loaders.first { workflow[$0]?["_meta"]?["title"]?.stringValue?.lowercased() == "sketch" } ?? loaders.first
        return [
            encoder("positive").flatMap { id in value(id, "text").flatMap { _ in parameter("prompt", .string, [Target(nodeID: id, input: "text")], "What the image shows (the positive prompt).") } },
            encoder("negative").flatMap { id in value(id, "text").flatMap { _ in parameter("negative_prompt", .string, [Target(nodeID: id, input: "text")], "What the image must not show.") } },
            parameter("seed", .integer, seeds, "The random seed; the same seed and inputs give the same image."),
            parameter("steps", .integer, steps.map { [$0] } ?? [], "Sampling steps: more is slower and finer."),
            latent.flatMap { id in value(id, "width").flatMap { _ in parameter("width", .integer, [Target(nodeID: id, input: "width")], "Image width in pixels.") } },
            latent.flatMap { id in value(id, "height").flatMap { _ in parameter("height", .integer, [Target(nodeID: id, input: "height")], "Image height in pixels.") } },
            image.flatMap { parameter("image", .image, [Target(nodeID: $0, input: "image")], "The input image: an https URL, a data URL or base64.") },
        ].compactMap { $0 }
    }

    private static func describe(_ name: String, kind: Kind) -> String {
        kind == .image ? "\(name): an input image as an https URL, a data URL or base64." : "\(name) (\(kind.rawValue))."
    }

    static func isLink(_ value: JSONValue?) -> Bool {
        guard let array = value?.arrayValue else { return false }
        return array.count == 2 && array[0].stringValue != nil && array[1].doubleValue != nil
    }
}
