import Comfy
import Foundation
import Testing

/// Parameters read from workflow files, and calls checked against them.
struct WorkflowToolTests {
    static func node(_ classType: String, _ inputs: [String: JSONValue], title: String? = nil, meta: [String: JSONValue] = [:]) -> JSONValue {
        var meta = meta
        if let title { meta["title"] = .string(title) }
        return .object(["class_type": .string(classType), "inputs": .object(inputs), "_meta": .object(meta)])
    }

    static func tool(_ workflow: [String: JSONValue]) throws -> WorkflowTool {
        try StyleWorkflow(name: "t", bytes: JSONValue.object(workflow).encoded()).tool
    }

    static let twoSamplers: [String: JSONValue] = [
        "1": node("CLIPTextEncode", ["text": "sky", "clip": .array(["9", 1])], title: "positive"),
        "2": node("KSampler", ["seed": 5, "steps": 20, "cfg": .number(7.5), "positive": .array(["1", 0])]),
        "3": node("KSamplerAdvanced", ["noise_seed": 5, "steps": 10]),
        "4": node("SaveImage", ["images": .array(["2", 0])], title: "output"),
    ]

    @Test func aSeedReachesEverySamplerAndTheOutputNodeIsTheOneTitledOutput() throws {
        let tool = try Self.tool(Self.twoSamplers)
        #expect(tool.parameters.map(\.name) == ["prompt", "seed", "steps"])
        #expect(tool.outputNodeID == "4")
        let call = try tool.call(["seed": 99, "prompt": "sea"])
        #expect(call.workflow["2"]?["inputs"]?["seed"] == 99)
        #expect(call.workflow["3"]?["inputs"]?["noise_seed"] == 99)
        #expect(call.workflow["1"]?["inputs"]?["text"] == "sea")
        // Defaults are the workflow's own values; null means "not given".
        #expect(try tool.call(["seed": .null]).workflow["2"]?["inputs"]?["seed"] == 5)
    }

    @Test func aStringArgumentIsMeasuredInCodePointsSoCombiningMarksCountEach() throws {
        let tool = try Self.tool(Self.twoSamplers)
        // One Character: "e" and as many combining accents as the limit allows, plus one.
        let stacked = "e" + String(repeating: "\u{301}", count: WorkflowTool.maxStringLength)
        #expect(stacked.count == 1)
        #expect(throws: WorkflowTool.CallError.self) { try tool.call(["prompt": .string(stacked)]) }
        let long = String(repeating: "中", count: WorkflowTool.maxStringLength)
        #expect(try tool.call(["prompt": .string(long)]).workflow["1"]?["inputs"]?["text"] == .string(long))
    }

    @Test func declaredParametersTakeTypeRangeAndWidgetFromMeta() throws {
        var workflow = Self.twoSamplers
        workflow["2"] = Self.node("KSampler", ["seed": 5, "steps": 20, "cfg": .number(7.5)], title: "input:guidance", meta: ["widget": "cfg", "minimum": 1, "maximum": 12, "type": "number"])
        let tool = try Self.tool(workflow)
        #expect(tool.parameters.map(\.name) == ["guidance"])
        let guidance = try #require(tool.parameters.first)
        #expect(guidance.kind == .number)
        #expect(guidance.defaultValue == .number(7.5))
        #expect(try tool.call(["guidance": .number(3.5)]).workflow["2"]?["inputs"]?["cfg"] == .number(3.5))
        #expect(throws: WorkflowTool.CallError.self) { try tool.call(["guidance": 13]) }
        #expect(throws: WorkflowTool.CallError.self) { try tool.call(["prompt": "not declared"]) }
    }

    @Test(arguments: [
        ("input:two words", "not a usable parameter name"),
        ("input:response_type", "not a usable parameter name"),
        ("input:x", "two nodes declare"),
    ])
    func badDeclarationsMakeTheFileUnusableWithTheReason(_ title: String, _ reason: String) throws {
        var workflow = Self.twoSamplers
        workflow["1"] = Self.node("CLIPTextEncode", ["text": "sky"], title: title)
        workflow["5"] = Self.node("CLIPTextEncode", ["text": "sea"], title: "input:x")
        do {
            _ = try StyleWorkflow(name: "t", bytes: JSONValue.object(workflow).encoded())
            Issue.record("accepted \(title)")
        } catch {
            #expect(error.description.contains(reason), "\(error)")
        }
    }

    @Test func aWorkflowWithoutLoadImageIsAToolButNotAStyle() throws {
        let style = try StyleWorkflow(name: "t", bytes: JSONValue.object(Self.twoSamplers).encoded())
        #expect(!style.isStyle)
        #expect(style.tool.parameters.contains { $0.name == "prompt" })
    }

    @Test func imageArgumentsAreURLsDataURLsOrBase64AndNeverFileNames() throws {
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47]
        #expect(try InputImageSource.parse("https://example.com/a.png", field: "image", maxBytes: 100) == .url("https://example.com/a.png"))
        #expect(try InputImageSource.parse("data:image/png;base64,iVBORw==", field: "image", maxBytes: 100) == .bytes(png))
        #expect(try InputImageSource.parse("iVBO\nRw==", field: "image", maxBytes: 100) == .bytes(png))
        #expect(try InputImageSource.parse("iVBORw", field: "image", maxBytes: 100) == .bytes(png))
        for bad in ["../../etc/passwd", "example.png", "data:image/png,plain", ""] {
            #expect(throws: InputImageError.self, "\(bad)") { try InputImageSource.parse(bad, field: "image", maxBytes: 100) }
        }
        #expect {
            try InputImageSource.parse(String(repeating: "A", count: 400), field: "image", maxBytes: 100)
        } throws: { ($0 as? InputImageError)?.kind == .tooLarge }
    }
}
