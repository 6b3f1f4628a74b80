/// What a caller's workflow may make ComfyUI do. ComfyUI runs every node it is given with its
/// own privileges and opens the file names it is given as they are (`nodes.py` LoadImage joins
/// them onto its input folder with `os.path.join`, which an absolute name or `..` escapes), so
/// the gateway is the only guard.
///
/// Two checks, on every node: its class must pass the policy (a deny list by default, or an
/// allow list), and its file-name inputs must stay in the folders the gateway hands out.
public struct NodePolicy: Sendable {
    /// Which node classes may run.
    public enum Classes: Sendable, Equatable {
        /// Any class but these.
        case deny(Set<String>)
        /// Only these.
        case allow(Set<String>)
    }

    public var classes: Classes
    /// ComfyUI's input subfolder where the gateway uploads images; the only folder upload
    /// inputs may name.
    public var uploadFolder: String

    public init(classes: Classes = .deny(NodePolicy.defaultDenied), uploadFolder: String = "gateway") {
        self.classes = classes
        self.uploadFolder = uploadFolder
    }

    /// Custom and core nodes that write files where the caller says, read arbitrary paths or
    /// URLs on the GPU server, or run code: none belongs in a workflow from the network.
    public static let defaultDenied: Set<String> = [
        // Core: multi-gigabyte model writes, and reads of ComfyUI's output folder (other callers' images).
        "CheckpointSave", "ImageOnlyCheckpointSave", "CLIPSave", "VAESave", "ModelSave", "LoraSave", "SaveLora",
        "LoadImageOutput", "LoadImageSetFromFolderNode", "LoadImageTextSetFromFolderNode",
        // WAS Node Suite: paths and URLs chosen by the caller.
        "Image Save", "Image Load", "Load Image Batch", "Load Text File", "Save Text File", "Text Load Line From File",
        "Text File History Loader", "Cache Node", "Load Cache", "Write to Video", "Write to GIF", "Create Video from Path",
        "Export API", "BLIP Model Loader",
        // pysssss custom scripts: text files read and written by path.
        "SaveText|pysssss", "LoadText|pysssss",
        // Video Helper Suite loaders that take a path instead of an upload.
        "VHS_LoadVideoPath", "VHS_LoadImagesPath", "VHS_LoadAudio", "VHS_LoadVideoFFmpegPath",
        // Images fetched by the GPU server itself (server-side request forgery).
        "LoadImageFromUrl", "LoadImageFromPath", "Load Image From Url (mtb)",
        // Code evaluated from an input.
        "Evaluate Integers", "Evaluate Floats", "Evaluate Strings", "AnyNode", "ExecutePython", "PythonScript",
        "RunPythonCode", "Exec Python Code Script",
    ]

    /// Inputs holding the name of an uploaded file (`image_upload`, `video_upload`,
    /// `audio_upload` combos): plain names or names in the gateway's folder only.
    static let uploadInputs: Set<String> = ["image", "mask", "video", "audio", "file"]

    /// Refuses the first node that breaks the policy.
    public func check(_ workflow: [String: JSONValue]) throws(WorkflowRejection) {
        for id in workflow.keys.sorted() {
            guard let node = workflow[id], let classType = node["class_type"]?.stringValue else { continue }
            switch classes {
            case .deny(let denied) where denied.contains(classType):
                throw WorkflowRejection(nodeID: id, classType: classType, message: "node \"\(id)\": \(classType) is not allowed on this gateway (NODE_POLICY)")
            case .allow(let allowed) where !allowed.contains(classType):
                throw WorkflowRejection(nodeID: id, classType: classType, message: "node \"\(id)\": \(classType) is not in this gateway's allowed node classes (NODE_ALLOW)")
            default:
                break
            }
            for (input, value) in node["inputs"]?.objectValue ?? [:] {
                guard let name = value.stringValue else { continue }
                if let problem = problem(with: name, in: input) {
                    throw WorkflowRejection(nodeID: id, classType: classType, input: input, message: "node \"\(id)\" (\(classType)) input \(input): \(problem)")
                }
            }
        }
    }

    /// What is wrong with a file name in `input`, or `nil` when the input is no file name or the name is fine.
    func problem(with name: String, in input: String) -> String? {
        let isUpload = Self.uploadInputs.contains(input)
        guard isUpload || Self.isPathInput(input) else { return nil }
        if name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return "a file name may not contain control characters"
        }
        var path = Substring(name)
        if isUpload, let open = path.lastIndex(of: "["), path.hasSuffix("]"), open > path.startIndex,
           path[path.index(before: open)] == " " {
            // folder_paths.annotated_filepath: `name [output]` and `name [temp]` read ComfyUI's other folders.
            let annotation = path[path.index(after: open)..<path.index(before: path.endIndex)]
            guard annotation == "input" else { return "only uploaded images may be named, not ComfyUI's \(annotation) folder" }
            path = path[..<path.index(before: open)]
        }
        if path.hasPrefix("/") || path.hasPrefix("\\") || path.hasPrefix("~") || Self.hasDrivePrefix(path) {
            return "absolute file names are not allowed"
        }
        let components = path.split(whereSeparator: { $0 == "/" || $0 == "\\" })
        if components.contains(where: { $0 == ".." }) {
            return "file names may not contain '..'"
        }
        if isUpload {
            if path.contains("\\") { return "file names may not contain '\\'" }
            if components.count > 1, !(components.count == 2 && components[0] == uploadFolder) {
                return "only files in the input folder or its \(uploadFolder)/ folder may be named"
            }
        }
        return nil
    }

    /// Inputs holding a model name or another path: `ckpt_name`, `lora_name`, `filename_prefix`, `directory`, ...
    static func isPathInput(_ input: String) -> Bool {
        ["path", "directory", "folder", "filename", "filename_prefix", "output_path", "root_dir"].contains(input)
            || input.hasSuffix("_name") || input.hasSuffix("_path") || input.hasSuffix("_dir") || input.hasSuffix("_file")
            || input.hasSuffix("_directory")
    }

    private static func hasDrivePrefix(_ path: Substring) -> Bool {
        let scalars = Array(path.unicodeScalars.prefix(2))
        return scalars.count == 2 && scalars[1] == ":" && scalars[0].isASCII && scalars[0].properties.isAlphabetic
    }
}
