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

    static let cases: [Case] = [
        Case(classType: "LoadImage", input: "image", value: "sketch.png", refusal: nil),
        Case(classType: "LoadImage", input: "image", value: "gateway/abc.png", refusal: nil),
        Case(classType: "LoadImage", input: "image", value: "sketch.png [input]", refusal: nil),
        Case(classType: "LoadImage", input: "image", value: "/etc/passwd", refusal: "absolute"),
        Case(classType: "LoadImage", input: "image", value: "../../etc/passwd", refusal: ".."),
        Case(classType: "LoadImage", input: "image", value: "gateway/../../x.png", refusal: ".."),
        Case(classType: "LoadImage", input: "image", value: "..\\..\\x.png", refusal: ".."),
        Case(classType: "LoadImage", input: "image", value: "C:\\Windows\\win.ini", refusal: "absolute"),
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

    @Test func linksAreNoFileNames() throws {
        let workflow: [String: JSONValue] = ["2": .object(["class_type": "ImageInvert", "inputs": .object(["image": .array(["1", 0])])])]
        try NodePolicy().check(workflow)
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
