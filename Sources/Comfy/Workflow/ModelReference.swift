/// A model file a workflow names, in ComfyUI's model folder for it (`folder_paths.py`).
public struct ModelReference: Sendable, Hashable, CustomStringConvertible {
    public var folder: String
    public var name: String

    public init(folder: String, name: String) {
        self.folder = folder
        self.name = name
    }

    public var description: String { "\(folder)/\(name)" }

    /// Inputs that name a model whatever the node class.
    static let folderOfInput: [String: String] = [
        "ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae", "control_net_name": "controlnet",
        "unet_name": "diffusion_models", "style_model_name": "style_models",
    ]

    /// Inputs whose folder depends on the class (`clip_name` is a text encoder or a CLIP vision model).
    static let folderOfClassInput: [String: [String: String]] = [
        "CLIPLoader": ["clip_name": "text_encoders"],
        "DualCLIPLoader": ["clip_name1": "text_encoders", "clip_name2": "text_encoders"],
        "TripleCLIPLoader": ["clip_name1": "text_encoders", "clip_name2": "text_encoders", "clip_name3": "text_encoders"],
        "CLIPVisionLoader": ["clip_name": "clip_vision"],
        "UpscaleModelLoader": ["model_name": "upscale_models"],
    ]

    /// The folders the gateway reads from each backend.
    public static var folders: [String] {
        Array(Set(folderOfInput.values).union(folderOfClassInput.values.flatMap(\.values))).sorted()
    }

    /// Every model the workflow names as a plain value (a name computed by a link is not known).
    public static func models(in workflow: [String: JSONValue]) -> [ModelReference] {
        var found: Set<ModelReference> = []
        for node in workflow.values {
            let classInputs = folderOfClassInput[node["class_type"]?.stringValue ?? ""] ?? [:]
            for (input, value) in node["inputs"]?.objectValue ?? [:] {
                guard let name = value.stringValue, let folder = classInputs[input] ?? folderOfInput[input] else { continue }
                found.insert(ModelReference(folder: folder, name: name))
            }
        }
        return found.sorted { ($0.folder, $0.name) < ($1.folder, $1.name) }
    }

    /// The checkpoint a workflow loads: a backend that ran it last has it in memory.
    public static func checkpoint(of workflow: [String: JSONValue]) -> String? {
        models(in: workflow).first { $0.folder == "checkpoints" || $0.folder == "diffusion_models" }?.name
    }
}
