@testable import Comfy
import Testing

/// What a caller's own graph may ask of a GPU: sizes, batches and steps as given.
struct WorkflowLimitsTests {
    static func workflow(_ classType: String, _ inputs: [String: JSONValue]) -> [String: JSONValue] {
        ["5": .object(["class_type": .string(classType), "inputs": .object(inputs)])]
    }

    static let cases: [(String, [String: JSONValue], String?)] = [
        ("EmptyLatentImage", ["width": 1024, "height": 1024, "batch_size": 4], nil),
        ("EmptyLatentImage", ["width": 4096, "height": 4096, "batch_size": 64], nil),
        // The larger side is named.
        ("EmptyLatentImage", ["width": 4096, "height": 4097], "height"),
        ("EmptyLatentImage", ["width": 16384, "height": 16384], "width"),
        // ComfyUI turns numeric strings (as Python's int() reads them) and `__value__` into numbers too.
        ("EmptyLatentImage", ["width": "8192", "height": .object(["__value__": 8192])], "width"),
        ("EmptyLatentImage", ["width": "16_384", "height": 64], nil),
        ("EmptyLatentImage", ["width": "16_384", "height": "16384\n"], "width"),
        ("EmptyLatentImage", ["width": "１６３８４", "height": 4096], "width"),
        ("EmptyLatentImage", ["width": .object(["__value__": 16384, "other": 0]), "height": 4096], "width"),
        // A side of 0 is computed from the other and the source's aspect.
        ("ImageScale", ["width": 0, "height": 8192, "image": .array(["1", 0])], "height"),
        ("EmptyLatentImage", ["width": 64, "height": 64, "batch_size": 65], "batch_size"),
        ("EmptyLatentImage", ["width": 64, "height": 64, "batch_size": "4096"], "batch_size"),
        ("EmptyImage", ["width": .largeInteger("99999999999999999999999"), "height": 8], "width"),
        ("RepeatLatentBatch", ["samples": .array(["4", 0]), "amount": 65], "amount"),
        // `amount` is only a batch on the repeat nodes.
        ("ImageAddNoise", ["amount": 640], nil),
        ("KSampler", ["steps": 150, "seed": 1], nil),
        ("KSampler", ["steps": 151], "steps"),
        ("BasicScheduler", ["steps": 10_000], "steps"),
        ("EmptyHunyuanLatentVideo", ["width": 848, "height": 480, "length": 129], nil),
        ("EmptyHunyuanLatentVideo", ["width": 848, "height": 480, "length": 16384], "length"),
        // A value computed by another node is not known here; a primitive's is.
        ("EmptyLatentImage", ["width": .array(["9", 0]), "height": 99_999], nil),
        ("EmptyLatentImage", ["width": .array(["8", 0]), "height": 8192], "width"),
        // A string that is no number is left to ComfyUI, which refuses it.
        ("KSampler", ["steps": "twenty"], nil),
    ]

    /// Node "9" computes a value; "8" is a primitive holding 8192.
    static let sources: [String: JSONValue] = [
        "8": .object(["class_type": "PrimitiveInt", "inputs": .object(["value": 8192])]),
        "9": .object(["class_type": "ImageToWidth", "inputs": .object([:])]),
    ]

    @Test(arguments: cases.indices)
    func aValueOverItsLimitIsRefusedNamingItsNodeAndInput(_ index: Int) {
        let (classType, inputs, refused) = Self.cases[index]
        do {
            try WorkflowLimits().check(Self.workflow(classType, inputs).merging(Self.sources) { $1 })
            #expect(refused == nil, "\(classType) \(inputs) passed")
        } catch {
            #expect(error.input == refused, "\(classType) \(inputs): \(error.message)")
            #expect(error.nodeID == "5")
            #expect(error.message.contains("WORKFLOW_MAX_"))
        }
    }

    /// A workflow tool's graph holds the operator's values but for the parameters its caller set.
    @Test func onlyTheInputsTheCallerGaveAreHeldToTheLimits() throws {
        let workflow = Self.workflow("KSampler", ["steps": 500, "seed": 1])
        try WorkflowLimits().check(workflow) { _, input in input == "seed" }
        #expect(throws: WorkflowRejection.self) { try WorkflowLimits().check(workflow) { _, input in input == "steps" } }
        // One side given: the operator's other side counts in the area.
        let scaled = Self.workflow("EmptyLatentImage", ["width": 8192, "height": 8192])
        #expect(throws: WorkflowRejection.self) { try WorkflowLimits().check(scaled) { _, input in input == "height" } }
    }

    @Test func zeroIsNoLimit() throws {
        try WorkflowLimits.none.check(Self.workflow("EmptyLatentImage", ["width": 16384, "height": 16384, "batch_size": 4096, "steps": 10_000]))
    }
}
