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
        // LoRA saving is `SaveLoRANode` in older ComfyUI and `SaveLoRA` in newer (nodes_train.py);
        // training holds the GPU for up to 100,000 steps with every model forced in.
        "CheckpointSave", "ImageOnlyCheckpointSave", "CLIPSave", "VAESave", "ModelSave", "LoraSave", "SaveLoRA", "SaveLoRANode",
        "TrainLoraNode",
        "LoadImageOutput", "LoadImageSetFromFolderNode", "LoadImageTextSetFromFolderNode",
        // WAS Node Suite: paths and URLs chosen by the caller.
        "Image Save", "Image Load", "Load Image Batch", "Load Text File", "Save Text File", "Text Load Line From File",
        "Text File History Loader", "Cache Node", "Load Cache", "Write to Video", "Write to GIF", "Create Video from Path",
        "Export API", "BLIP Model Loader",
        // WAS: images read by a glob of the caller's (every caller's outputs, as one grid), frames
        // and morphs written where the caller says, any Hugging Face repository downloaded.
        "Create Grid Image", "Create Morph Image", "Create Morph Image from Path", "Video Dump Frames", "CLIPSeg Model Loader",
        // pysssss custom scripts: text files read and written by path.
        "SaveText|pysssss", "LoadText|pysssss",
        // Video Helper Suite loaders that take a path instead of an upload.
        "VHS_LoadVideoPath", "VHS_LoadImagesPath", "VHS_LoadImagePath", "VHS_LoadAudio", "VHS_LoadVideoFFmpegPath",
        // Images fetched by the GPU server itself (server-side request forgery).
        "LoadImageFromUrl", "LoadImageFromPath", "Load Image From Url (mtb)",
        // Code evaluated from an input.
        "Evaluate Integers", "Evaluate Floats", "Evaluate Strings", "AnyNode", "ExecutePython", "PythonScript",
        "RunPythonCode", "Exec Python Code Script",
        // Folder and URL loaders of other packs (KJNodes, Inspire, ...).
        "LoadImagesFromFolderKJ", "LoadImageFromURL", "DownloadImageFromURL", "LoadImagesFromDir //Inspire",
        "LoadImageListFromDir //Inspire", "LoadImagesFromURL", "Load Image From URL",
    ]

    /// How deep an input's value may nest (a point list is two levels).
    public static let maxInputDepth = 32

    /// Inputs holding the name of a file in ComfyUI's input folder (`image_upload`,
    /// `video_upload`, `audio_upload` combos, and `LoadLatent`'s list of `.latent` files): plain
    /// names, or names the gateway handed out in its folder. Their loaders check the name
    /// themselves (`VALIDATE_INPUTS`), so ComfyUI skips its own check against the list.
    public static let uploadInputs: Set<String> = ["image", "mask", "video", "audio", "file", "latent"]

    /// Loader classes whose upload inputs are always a file name: a link into them (a string
    /// computed by another node) is refused, since it cannot be checked.
    public static let loaderClasses: Set<String> = [
        "LoadImage", "LoadImageMask", "LoadImageOutput", "LoadAudio", "LoadVideo", "VHS_LoadVideo", "VHS_LoadAudioUpload",
        "VHS_LoadVideoFFmpeg", "VHS_LoadImages", "VHS_LoadImagePath", "WebcamCapture",
    ]

    /// Other nodes whose upload input holds a file name, never an image from another node: no
    /// link into it either. (Not loaders of input images: their input is no image's place.)
    static let fileNameClasses: Set<String> = ["RecordAudio", "Load3D", "Load3DAnimation"]

    /// Loaders of other files of the input folder by name (no input image goes to them): their
    /// name inputs are checked as uploads' are, and a link into them is refused as well.
    public static let otherFileLoaderClasses: Set<String> = ["LoadLatent"]

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
                // ComfyUI quotes the workflow back three levels deeper (`/history`, `/queue`):
                // those answers must stay within what the gateway parses.
                if value.nests(deeperThan: Self.maxInputDepth) {
                    throw WorkflowRejection(
                        nodeID: id, classType: classType, input: input,
                        message: "node \"\(id)\" (\(classType)) input \(input): nested deeper than \(Self.maxInputDepth) levels"
                    )
                }
                if let problem = problem(with: value, in: input, of: classType) {
                    throw WorkflowRejection(nodeID: id, classType: classType, input: input, message: "node \"\(id)\" (\(classType)) input \(input): \(problem)")
                }
            }
        }
    }

    /// What is wrong with an input's value, or `nil`.
    func problem(with value: JSONValue, in input: String, of classType: String) -> String? {
        let kind = Self.kind(of: input)
        guard kind != .other else { return nil }
        switch value {
        case .string(let name):
            // `file:/x` (urllib), ffmpeg's `concat:`, NTFS streams (`output::$INDEX_ALLOCATION`),
            // drive letters. A `*_name` input often holds a choice that is no file (a style's name).
            // `filename_prefix` stays in the savers' output folder (and may hold `%date:...%`).
            if kind != .url, kind != .prefix, name.contains(":"), !name.contains("://"), !input.lowercased().hasSuffix("_name") {
                return "a file name may not contain ':'"
            }
            return problem(with: name, kind: kind)
        case .object(let members):
            // execution.py unwraps `{"__value__": v}` before validating and running the node.
            guard members.count == 1, let wrapped = members["__value__"] else {
                return "a file name must be a string"
            }
            return problem(with: wrapped, in: input, of: classType)
        case .array(let elements):
            // Anything but `[node id, output index]` is a list of values (ComfyUI passes it to
            // the node as it is): each of them is checked as a name.
            guard elements.count == 2, elements[0].stringValue != nil, elements[1].intValue != nil else {
                return elements.lazy.compactMap { self.problem(with: $0, in: input, of: classType) }.first
            }
            // A link: another node's output. For a loader or a path input it is a computed name.
            let computed = kind == .path || kind == .prefix || kind == .folder || kind == .url || Self.loaderClasses.contains(classType)
                || Self.otherFileLoaderClasses.contains(classType) || (kind == .upload && Self.fileNameClasses.contains(classType))
            return computed ? "a file name must be given as it is, not computed by another node" : nil
        case .null, .bool, .number, .largeInteger:
            return nil
        }
    }

    /// ComfyUI's working directory and the folders in it that hold callers' files, settings,
    /// models and code.
    static let comfyFolders: Set<String> = [".", "output", "temp", "input", "user", "models", "custom_nodes"]

    /// Whether a path's first component opens one of `comfyFolders`, also as Windows reads it:
    /// trailing dots and spaces dropped, case ignored, or an 8.3 short name (`CUSTOM~1`).
    static func namesComfyFolder(_ component: String) -> Bool {
        // Upper- then lower-cased: `ſ` and `ı` fold onto `s` and `i`, as NTFS and APFS compare them.
        var name = component.uppercased().lowercased()
        guard !name.isEmpty else { return false }
        while name.hasSuffix(".") || name.hasSuffix(" ") { name.removeLast() }
        // ".", "..." or " ": the working directory itself.
        if name.isEmpty || comfyFolders.contains(name) { return true }
        if let tilde = name.lastIndex(of: "~"), name.index(after: tilde) < name.endIndex, name[name.index(after: tilde)...].allSatisfy(\.isNumber) {
            let stem = name[..<tilde]
            return comfyFolders.contains { $0.count > 1 && $0.hasPrefix(stem) }
        }
        return false
    }

    /// What an input holds, judged by its name.
    enum InputKind { case upload, path, prefix, folder, url, other }

    static func kind(of name: String) -> InputKind {
        // A custom node's `Path` or `Image_URL` is a path or URL too.
        let input = name.lowercased()
        if uploadInputs.contains(input) { return .upload }
        if ["url", "uri", "link"].contains(input) || input.hasSuffix("_url") || input.hasSuffix("_uri") { return .url }
        if ["directory", "folder", "dir", "folder_path", "directory_path", "root_dir", "output_dir", "input_dir"].contains(input)
            || input.hasSuffix("_dir") || input.hasSuffix("_directory") || input.hasSuffix("_folder") {
            return .folder
        }
        // ComfyUI's savers keep a prefix inside their output folder (`get_save_image_path`).
        if input == "filename_prefix" { return .prefix }
        if ["path", "filename", "filepath", "fullpath", "file_path", "output_path", "save_to", "glob"].contains(input)
            || input.hasSuffix("_name") || input.hasSuffix("_path") || input.hasSuffix("_file") || input.hasSuffix("_glob") {
            return .path
        }
        return .other
    }

    /// What is wrong with a file name, or `nil` when it is fine for its kind of input.
    func problem(with name: String, kind: InputKind) -> String? {
        let scalars = Array(name.unicodeScalars)
        if scalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return "a file name may not contain control characters"
        }
        switch kind {
        case .url:
            // The GPU server would fetch it itself (server-side request forgery); `http:host/x`
            // and `file:/x` are URLs to urllib and ffmpeg too.
            return name.contains(":") || name.hasPrefix("//") ? "the GPU server may not fetch URLs; send images through the gateway" : nil
        case .folder:
            // Relative folders resolve against ComfyUI's working directory (`output`: every caller's images).
            return name.isEmpty ? nil : "folder inputs are not allowed"
        case .path, .prefix:
            // A custom node may hand its path to ffmpeg or OpenCV, which fetch URLs.
            if name.contains("://") { return "the GPU server may not fetch URLs; send images through the gateway" }
        case .upload, .other:
            break
        }
        if kind != .other, let first = scalars.first, first == "\"" || first == "'" || first.properties.isWhitespace {
            // Nodes written for Windows strip quotes and spaces around a path (`strip_path`).
            return "a file name may not start with a quote or a space"
        }
        var path = scalars[...]
        // A path input's choice may end in another bracket: only the folders' own are refused.
        if kind == .path, path.last == "]", name.hasSuffix("[output]") || name.hasSuffix("[temp]") {
            return "names in ComfyUI's annotated folders ([output], [temp]) are not allowed; only uploaded images may be named"
        }
        if kind == .upload, path.last == "]" {
            // folder_paths.annotated_filepath: a name ending in `[output]` or `[temp]` (whatever
            // comes before the bracket) reads ComfyUI's other folders; `[input]` is the default.
            let suffix = Array("[input]".unicodeScalars)
            guard path.count >= suffix.count + 1, Array(path.suffix(suffix.count)) == suffix else {
                return "names in ComfyUI's annotated folders ([output], [temp]) are not allowed; only uploaded images may be named"
            }
            path = path.dropLast(suffix.count + 1)
        }
        let slash: Unicode.Scalar = "/"
        let backslash: Unicode.Scalar = "\\"
        if let first = path.first, first == slash || first == backslash || first == "~" {
            return "absolute file names are not allowed"
        }
        if path.count >= 2, path[path.startIndex + 1] == ":", path.first!.isASCII, path.first!.properties.isAlphabetic {
            return "absolute file names are not allowed"
        }
        // Split on code points, as Python does: a `/` followed by a combining mark is still a separator.
        let components = path.split(omittingEmptySubsequences: false) { $0 == slash || $0 == backslash }
        if components.contains(where: { $0.elementsEqual("..".unicodeScalars) }) {
            return "file names may not contain '..'"
        }
        // A custom node resolves a relative path against ComfyUI's working directory, where
        // `output`, `temp`, `input` and `user` hold every caller's images and settings.
        if kind == .path, let first = components.first, Self.namesComfyFolder(String(String.UnicodeScalarView(first))) {
            return "paths into ComfyUI's own folders (\(String(String.UnicodeScalarView(first)))) are not allowed"
        }
        if kind == .upload {
            if path.contains(backslash) { return "file names may not contain '\\'" }
            let folder = Array(uploadFolder.unicodeScalars)
            if components.count > 1, !(components.count == 2 && Array(components[0]) == folder) {
                return "only files in the input folder or its \(uploadFolder)/ folder may be named"
            }
            // The folder also holds every drawing session's sketch (`sketch-<instance>-<slot>.png`): only the
            // names the gateway hands out for a caller's own input images may be named there.
            if components.count == 2, !InputImages.isHandedOutName(String(String.UnicodeScalarView(components[1]))) {
                return "in the \(uploadFolder)/ folder only the names the gateway gave your input images may be named"
            }
        }
        return nil
    }
}
