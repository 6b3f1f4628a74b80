@testable import Comfy
import Testing

/// The node policy: which classes run, and which file names may reach ComfyUI.
struct NodePolicyTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var classType: String
        var input: String
        var value: String
        /// A word of the refusal, or `nil` when the value passes.
        var refusal: String?
        var testDescription: String { "\(classType).\(input) = \(value)" }
    }

    /// A name of the form the gateway gives a caller's input image.
    static let handedOut = "gateway/" + String(repeating: "0a", count: 32) + ".png"

    static let cases: [Case] = [
        Case(classType: "LoadImage", input: "image", value: "sketch.png", refusal: nil),
        Case(classType: "LoadImage", input: "image", value: handedOut, refusal: nil),
        Case(classType: "LoadImage", input: "image", value: handedOut + " [input]", refusal: nil),
        // Another painter's sketch, and names the gateway never gives, in its folder.
        Case(classType: "LoadImage", input: "image", value: "gateway/session-victim.png", refusal: "gave your input images"),
        Case(classType: "LoadImage", input: "image", value: "gateway/abc.png", refusal: "gave your input images"),
        Case(classType: "LoadImage", input: "image", value: "gateway/" + String(repeating: "0A", count: 32) + ".png", refusal: "gave your input images"),
        Case(classType: "LoadImageMask", input: "image", value: "gateway/session-victim.png [input]", refusal: "gave your input images"),
        // LoadLatent opens its name itself (ComfyUI skips the list check): the same rules as an image's.
        Case(classType: "LoadLatent", input: "latent", value: "kept.latent", refusal: nil),
        Case(classType: "LoadLatent", input: "latent", value: "/dev/zero", refusal: "absolute"),
        Case(classType: "LoadLatent", input: "latent", value: "../output/latents/ComfyUI_00001_.latent", refusal: ".."),
        Case(classType: "LoadLatent", input: "latent", value: "ComfyUI_00001_.latent [output]", refusal: "output"),
        Case(classType: "LoadLatent", input: "latent", value: "latents/ComfyUI_00001_.latent", refusal: "folder"),
        Case(classType: "LoadImage", input: "image", value: "sketch.png [input]", refusal: nil),
        Case(classType: "LoadImage", input: "image", value: "/etc/passwd", refusal: "absolute"),
        Case(classType: "LoadImage", input: "image", value: "../../etc/passwd", refusal: ".."),
        Case(classType: "LoadImage", input: "image", value: "gateway/../../x.png", refusal: ".."),
        Case(classType: "LoadImage", input: "image", value: "..\\..\\x.png", refusal: ".."),
        Case(classType: "LoadImage", input: "image", value: "C:\\Windows\\win.ini", refusal: "':'"),
        Case(classType: "LoadImage", input: "image", value: "~/x.png", refusal: "absolute"),
        Case(classType: "LoadImage", input: "image", value: "clipspace/x.png", refusal: "folder"),
        Case(classType: "LoadImage", input: "image", value: "gateway/a/b.png", refusal: "folder"),
        Case(classType: "LoadImage", input: "image", value: "ComfyUI_00001_.png [output]", refusal: "output"),
        Case(classType: "LoadImage", input: "image", value: "x.png [temp]", refusal: "temp"),
        Case(classType: "LoadImage", input: "image", value: "x\u{0}.png", refusal: "control"),
        Case(classType: "LoadImageMask", input: "image", value: "../mask.png", refusal: ".."),
        Case(classType: "VHS_LoadVideo", input: "video", value: "/srv/videos/a.mp4", refusal: "absolute"),
        Case(classType: "LoadAudio", input: "audio", value: "other/a.wav", refusal: "folder"),
        Case(classType: "CheckpointLoaderSimple", input: "ckpt_name", value: "sdxl/base.safetensors", refusal: nil),
        Case(classType: "CheckpointLoaderSimple", input: "ckpt_name", value: "/etc/passwd", refusal: "absolute"),
        Case(classType: "LoraLoader", input: "lora_name", value: "../../../x.safetensors", refusal: ".."),
        Case(classType: "SaveImage", input: "filename_prefix", value: "gw/run", refusal: nil),
        Case(classType: "SaveImage", input: "filename_prefix", value: "../../root/.ssh/x", refusal: ".."),
        Case(classType: "KSampler", input: "sampler_name", value: "euler", refusal: nil),
        Case(classType: "CLIPTextEncode", input: "text", value: "/etc/passwd ../ a photo", refusal: nil),
        Case(classType: "LoadImage", input: "image", value: "victim_00001_.pngX[output]", refusal: "annotated"),
        Case(classType: "LoadImage", input: "image", value: "x.png\u{A0}[temp]", refusal: "annotated"),
        Case(classType: "LoadImage", input: "image", value: "x.pngX[input]", refusal: nil),
        Case(classType: "LoadImage", input: "image", value: "../\u{301}x.png", refusal: ".."),
        Case(classType: "CheckpointLoaderSimple", input: "ckpt_name", value: "a\u{600}/../../x", refusal: ".."),
        Case(classType: "LoadImagesFromFolder", input: "folder", value: "output", refusal: "folder"),
        Case(classType: "SomeLoader", input: "image_url", value: "http://169.254.169.254/latest", refusal: "URL"),
        Case(classType: "SomeLoader", input: "filepath", value: "/etc/shadow", refusal: "absolute"),
        // Inputs are judged by their name whatever its case.
        Case(classType: "SomeLoader", input: "Path", value: "/etc/shadow", refusal: "absolute"),
        Case(classType: "SomeLoader", input: "Image_URL", value: "http://169.254.169.254/latest", refusal: "URL"),
        Case(classType: "SomeLoader", input: "Output_Dir", value: "../../models", refusal: "folder"),
        // Custom nodes resolve relative paths against ComfyUI's working directory, and some hand
        // them to ffmpeg or OpenCV, which fetch URLs.
        Case(classType: "Video Dump Frames2", input: "video_path", value: "http://169.254.169.254/latest", refusal: "URL"),
        Case(classType: "Create Grid Image2", input: "images_path", value: ".", refusal: "own folders"),
        Case(classType: "Create Grid Image2", input: "pattern_glob", value: "output/**/*.png", refusal: "own folders"),
        Case(classType: "Create Grid Image2", input: "pattern_glob", value: "/**/*.png", refusal: "absolute"),
        Case(classType: "SomeSaver", input: "output_path", value: "./input", refusal: "own folders"),
        Case(classType: "SomeLoader", input: "file_path", value: "Temp/ComfyUI_temp_00001_.png", refusal: "own folders"),
        Case(classType: "SomeLoader", input: "file_path", value: "user/default/comfy.settings.json", refusal: "own folders"),
        Case(classType: "SaveImage", input: "filename_prefix", value: "outputs/run", refusal: nil),
        // ComfyUI's savers keep their prefix inside the output folder themselves.
        Case(classType: "SaveImage", input: "filename_prefix", value: "output/run", refusal: nil),
        Case(classType: "SaveImage", input: "filename_prefix", value: "http://x/run", refusal: "URL"),
        // As a Windows GPU server reads them: trailing dots and spaces dropped, 8.3 short names.
        Case(classType: "SomeLoader", input: "file_path", value: "output./ComfyUI_00001_.png", refusal: "own folders"),
        Case(classType: "SomeLoader", input: "file_path", value: "Output /ComfyUI_00001_.png", refusal: "own folders"),
        Case(classType: "SomeLoader", input: "file_path", value: "CUSTOM~1/pack/secret.py", refusal: "own folders"),
        Case(classType: "SomeLoader", input: "file_path", value: ".../x.png", refusal: "own folders"),
        Case(classType: "CheckpointLoaderSimple", input: "ckpt_name", value: "outputs~2/x.safetensors", refusal: nil),
        // URLs without `//`, ffmpeg's protocols, NTFS streams, quoted paths, other folders by annotation.
        Case(classType: "SomeLoader", input: "image_url", value: "file:/etc/passwd", refusal: "URL"),
        Case(classType: "SomeLoader", input: "video_path", value: "http:evil.example/a.mp4", refusal: "':'"),
        Case(classType: "SomeLoader", input: "video_path", value: "concat:a.mp4|b.mp4", refusal: "':'"),
        Case(classType: "SomeLoader", input: "file_path", value: "output::$INDEX_ALLOCATION/x.png", refusal: "':'"),
        Case(classType: "LoadImage", input: "image", value: "x.png:stream", refusal: "':'"),
        Case(classType: "SomeLoader", input: "file_path", value: "\"/etc/passwd\"", refusal: "quote"),
        Case(classType: "SomeLoader", input: "file_path", value: " /etc/passwd", refusal: "quote or a space"),
        Case(classType: "SomeLoader", input: "file_path", value: "ComfyUI_00001_.png [output]", refusal: "annotated"),
        // As NTFS and APFS fold `ſ` and `ı`.
        Case(classType: "SomeLoader", input: "file_path", value: "u\u{17F}er/default/comfy.settings.json", refusal: "own folders"),
        Case(classType: "SomeLoader", input: "file_path", value: "\u{131}nput/x.png", refusal: "own folders"),
        // A choice named `*_name` may hold a colon or end in a bracket; a prefix a date token.
        Case(classType: "SomeStyler", input: "style_name", value: "Photographic: cinematic", refusal: nil),
        Case(classType: "SomeStyler", input: "style_name", value: "Cinematic [v2]", refusal: nil),
        Case(classType: "SaveImage", input: "filename_prefix", value: "run/%date:yyyy-MM-dd%", refusal: nil),
    ]

    @Test(arguments: cases)
    func fileNameInputs(_ testCase: Case) {
        let workflow: [String: JSONValue] = ["7": .object(["class_type": .string(testCase.classType), "inputs": .object([testCase.input: .string(testCase.value)])])]
        do {
            try NodePolicy().check(workflow)
            #expect(testCase.refusal == nil, "passed, expected a refusal")
        } catch {
            guard let refusal = testCase.refusal else {
                Issue.record("refused: \(error.message)")
                return
            }
            #expect(error.message.contains(refusal), "\(error.message)")
            #expect(error.nodeID == "7")
            #expect(error.input == testCase.input)
            #expect(error.classType == testCase.classType)
        }
    }

    @Test func linksCarryImagesButNoFileNamesIntoLoaders() throws {
        let invert: [String: JSONValue] = ["2": .object(["class_type": "ImageInvert", "inputs": .object(["image": .array(["1", 0])])])]
        try NodePolicy().check(invert)
        for (classType, input) in [
            ("LoadImage", "image"), ("WebcamCapture", "image"), ("LoadLatent", "latent"), ("VHS_LoadImagePath", "image"), ("AnyNode", "file_path"),
            ("AnyNode", "folder"),
        ] {
            let computed: [String: JSONValue] = ["2": .object(["class_type": .string(classType), "inputs": .object([input: .array(["1", 0])])])]
            #expect(throws: WorkflowRejection.self, "\(classType).\(input)") { try NodePolicy(classes: .deny([])).check(computed) }
        }
    }

    @Test func listsOfValuesAreCheckedNameByNameAndOnlyANodeOutputPairIsALink() throws {
        for list: JSONValue in [.array(["x.wav [output]"]), .object(["__value__": .array(["ok.png", "/etc/passwd"])]), .array([.array(["/etc/passwd"])])] {
            let workflow: [String: JSONValue] = ["1": .object(["class_type": "SomeRecorder", "inputs": .object(["audio": list])])]
            #expect(throws: WorkflowRejection.self, "\(list)") { try NodePolicy().check(workflow) }
        }
        let names: [String: JSONValue] = ["1": .object(["class_type": "SomeRecorder", "inputs": .object(["audio": .array(["a.wav", "b.wav"])])])]
        try NodePolicy().check(names)
        // Core nodes whose upload input is a file name: no computed one.
        for classType in ["RecordAudio", "Load3D"] {
            let linked: [String: JSONValue] = ["2": .object(["class_type": .string(classType), "inputs": .object(["image": .array(["1", 0])])])]
            #expect(throws: WorkflowRejection.self, "\(classType)") { try NodePolicy().check(linked) }
        }
    }

    @Test func wrappedValuesAreCheckedAsComfyUIUnwrapsThem() throws {
        let wrapped: [String: JSONValue] = ["1": .object(["class_type": "LoadImage", "inputs": .object(["image": .object(["__value__": "/etc/hostname"])])])]
        #expect(throws: WorkflowRejection.self) { try NodePolicy().check(wrapped) }
        let odd: [String: JSONValue] = ["1": .object(["class_type": "LoadImage", "inputs": .object(["image": .object(["name": "x.png"])])])]
        #expect(throws: WorkflowRejection.self) { try NodePolicy().check(odd) }
        let fine: [String: JSONValue] = ["1": .object(["class_type": "LoadImage", "inputs": .object(["image": .object(["__value__": .string(Self.handedOut)])])])]
        try NodePolicy().check(fine)
    }

    /// ComfyUI quotes a workflow three levels deeper in `/history` and `/queue`: an input nested
    /// as deep as the parser takes would make those answers unreadable (the prompt called lost,
    /// the backend's queue unreadable for everyone's prompts).
    @Test func anInputNestedDeeperThanTheLimitIsRefusedOfAnyClass() throws {
        func nested(_ depth: Int) -> JSONValue { depth == 0 ? .number(1) : .array([nested(depth - 1)]) }
        func workflow(_ depth: Int) -> [String: JSONValue] {
            ["1": .object(["class_type": "SomeCustomNode", "inputs": .object(["points": nested(depth)])])]
        }
        try NodePolicy(classes: .deny([])).check(workflow(NodePolicy.maxInputDepth))
        let refusal = #expect(throws: WorkflowRejection.self) { try NodePolicy(classes: .deny([])).check(workflow(NodePolicy.maxInputDepth + 1)) }
        #expect(refusal?.input == "points")
        #expect(refusal?.message.contains("nested deeper than \(NodePolicy.maxInputDepth) levels") == true)
        // The whole request, quoted three levels deeper, still parses.
        #expect(NodePolicy.maxInputDepth + 3 + 3 < JSONParser.maxDepth)
    }

    /// ComfyUI's own class ids (comfy_extras/nodes_train.py), under both names LoRA saving has had.
    @Test(arguments: ["SaveLoRA", "SaveLoRANode", "TrainLoraNode", "CheckpointSave", "LoadImageOutput"])
    func coreNodesThatWriteModelsTrainOrReadOutputsAreRefusedByDefault(_ classType: String) {
        let workflow: [String: JSONValue] = ["3": .object(["class_type": .string(classType), "inputs": .object(["prefix": "loras/x"])])]
        #expect(throws: WorkflowRejection.self) { try NodePolicy().check(workflow) }
    }

    /// Custom nodes (Video Helper Suite, WAS Node Suite) that read any file or URL from a string
    /// another node computes, glob every caller's images into one, or download any model.
    @Test(arguments: ["VHS_LoadImagePath", "Create Grid Image", "Create Morph Image from Path", "Video Dump Frames", "CLIPSeg Model Loader"])
    func customNodesThatReadByComputedPathGlobOrDownloadAreRefusedByDefault(_ classType: String) {
        let workflow: [String: JSONValue] = ["3": .object(["class_type": .string(classType), "inputs": .object(["prefix": "loras/x"])])]
        #expect(throws: WorkflowRejection.self) { try NodePolicy().check(workflow) }
    }

    @Test func deniedClassesAreRefusedByDefaultAndAnAllowListAdmitsOnlyItsOwn() throws {
        let saver: [String: JSONValue] = ["5": .object(["class_type": "Image Save", "inputs": .object([:])])]
        #expect(throws: WorkflowRejection.self) { try NodePolicy().check(saver) }
        let invert: [String: JSONValue] = ["1": .object(["class_type": "ImageInvert", "inputs": .object([:])])]
        try NodePolicy().check(invert)
        let allowOnly = NodePolicy(classes: .allow(["EmptyImage"]))
        do {
            try allowOnly.check(invert)
            Issue.record("ImageInvert passed an allow list without it")
        } catch {
            #expect(error.nodeID == "1")
            #expect(error.message.contains("NODE_ALLOW"))
        }
        try NodePolicy(classes: .deny([])).check(saver)
    }
}
