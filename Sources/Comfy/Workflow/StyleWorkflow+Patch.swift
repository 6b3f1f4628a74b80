/// Filling a style's workflow in for one generation of a drawing session.
extension StyleWorkflow {
    /// The graph to submit: the sketch in the sketch node, the session's seed in every sampler,
    /// and, when given, the text of the positive prompt.
    public func patched(sketchImage: String, seed: UInt64, prompt: String?) -> [String: JSONValue] {
        var graph = workflow
        if let sketchNodeID { graph[sketchNodeID] = graph[sketchNodeID]?.settingInput("image", .string(sketchImage)) }
        // Seeds: KSampler `seed`, KSamplerAdvanced and RandomNoise `noise_seed`. A seed wired from
        // another node (an array link) is left alone.
        for (id, node) in graph {
            for key in ["seed", "noise_seed"] where node["inputs"]?[key]?.doubleValue != nil {
                graph[id] = graph[id]?.settingInput(key, .number(Double(seed)))
            }
        }
        if let prompt, let id = positivePromptNodeID {
            graph[id] = graph[id]?.settingInput("text", .string(prompt))
        }
        // The title is UI metadata; ComfyUI ignores it, and it is no use on the wire.
        return graph
    }

    /// The `CLIPTextEncode` titled `positive`, else the one wired to a sampler's `positive` input.
    public var positivePromptNodeID: String? {
        let encoders = orderedNodeIDs.filter { workflow[$0]?["class_type"]?.stringValue == "CLIPTextEncode" }
        if let titled = encoders.first(where: { workflow[$0]?["_meta"]?["title"]?.stringValue?.lowercased() == "positive" }) {
            return titled
        }
        for id in orderedNodeIDs {
            if let link = workflow[id]?["inputs"]?["positive"]?.arrayValue, let source = link.first?.stringValue, encoders.contains(source) {
                return source
            }
        }
        return nil
    }
}

extension JSONValue {
    /// A node with one input replaced.
    public func settingInput(_ name: String, _ value: JSONValue) -> JSONValue {
        guard var node = objectValue else { return self }
        var inputs = node["inputs"]?.objectValue ?? [:]
        inputs[name] = value
        node["inputs"] = .object(inputs)
        return .object(node)
    }
}
