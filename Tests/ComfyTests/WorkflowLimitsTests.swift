@testable import Comfy
import Testing

/// What a caller's own graph may ask of a GPU: sizes, batches and steps as given.
struct WorkflowLimitsTests {
    static func workflow(_ classType: String, _ inputs: [String: JSONValue]) -> [String: JSONValue] {
        ["5": .object(["class_type": .string(classType), "inputs": .object(inputs)])]
    }

    static let cases: [(String, [String: JSONValue], String?)] = [
        ("EmptyLatentImage", ["width": 1024, "height": 1024, "batch_size": 4], nil),
        ("EmptyLatentImage", ["width": 4096, "height": 4096, "batch_size": 16], nil),
        ("EmptyLatentImage", ["width": 4096, "height": 4097], "width"),
        ("EmptyLatentImage", ["width": 16384, "height": 16384], "width"),
        // ComfyUI turns numeric strings and `__value__` into numbers too.
        ("EmptyLatentImage", ["width": "8192", "height": .object(["__value__": 8192])], "width"),
        ("EmptyLatentImage", ["width": 64, "height": 64, "batch_size": 17], "batch_size"),
        ("EmptyLatentImage", ["width": 64, "height": 64, "batch_size": "4096"], "batch_size"),
        ("EmptyImage", ["width": .largeInteger("99999999999999999999999"), "height": 8], "width"),
        ("RepeatLatentBatch", ["samples": .array(["4", 0]), "amount": 64], "amount"),
        // `amount` is only a batch on the repeat nodes.
        ("ImageAddNoise", ["amount": 64], nil),
        ("KSampler", ["steps": 150, "seed": 1], nil),
        ("KSampler", ["steps": 151], "steps"),
        ("BasicScheduler", ["steps": 10_000], "steps"),
        // A value computed by another node is not known here.
        ("EmptyLatentImage", ["width": .array(["9", 0]), "height": 99_999], nil),
    ]

    @Test(arguments: cases.indices)
    func aValueOverItsLimitIsRefusedNamingItsNodeAndInput(_ index: Int) {
        let (classType, inputs, refused) = Self.cases[index]
        do {
            try WorkflowLimits().check(Self.workflow(classType, inputs))
            #expect(refused == nil, "\(classType) \(inputs) passed")
        } catch {
            #expect(error.input == refused, "\(classType) \(inputs): \(error.message)")
            #expect(error.nodeID == "5")
            #expect(error.message.contains("WORKFLOW_MAX_"))
        }
    }

    @Test func zeroIsNoLimit() throws {
        try WorkflowLimits.none.check(Self.workflow("EmptyLatentImage", ["width": 16384, "height": 16384, "batch_size": 4096, "steps": 10_000]))
    }
}
