import Foundation

/// What one caller's workflow may ask of a GPU server. ComfyUI allocates what a graph says
/// (`EmptyLatentImage` takes up to 16384×16384 and a batch of 4096): one request could hold a
/// GPU for hours or make its host run out of memory. The values callers give are checked here;
/// a value computed by another node (a link) is not, nor are the sizes that upscalers make.
///
/// Workflow tools and drawing styles are the operator's graphs, with parameters of declared
/// bounds: their own values are not checked against these.
public struct WorkflowLimits: Sendable, Equatable {
    /// Width × height of one node's image or latent (`width` and `height` inputs); 0: no limit.
    public var maxPixels: Int
    /// Images in one batch (`batch_size`, and the repeat nodes' `amount`); 0: no limit.
    public var maxBatch: Int
    /// Sampling steps (`steps`); 0: no limit.
    public var maxSteps: Int

    public init(maxPixels: Int = 4096 * 4096, maxBatch: Int = 16, maxSteps: Int = 150) {
        self.maxPixels = maxPixels
        self.maxBatch = maxBatch
        self.maxSteps = maxSteps
    }

    public static let none = WorkflowLimits(maxPixels: 0, maxBatch: 0, maxSteps: 0)

    /// Nodes whose `amount` input multiplies a batch.
    static let batchRepeaters: Set<String> = ["RepeatLatentBatch", "RepeatImageBatch"]

    /// Refuses the first node that asks for more than the limits allow.
    public func check(_ workflow: [String: JSONValue]) throws(WorkflowRejection) {
        for id in workflow.keys.sorted() {
            guard let node = workflow[id], let classType = node["class_type"]?.stringValue, let inputs = node["inputs"]?.objectValue else { continue }
            func refuse(_ input: String, _ problem: String) -> WorkflowRejection {
                WorkflowRejection(nodeID: id, classType: classType, input: input, message: "node \"\(id)\" (\(classType)) input \(input): \(problem)")
            }
            if maxPixels > 0, let width = inputs["width"].flatMap(Self.number), let height = inputs["height"].flatMap(Self.number) {
                // Multiplied as Doubles: two huge values must not overflow.
                if width * height > Double(maxPixels) {
                    throw refuse("width", "\(Self.text(width))×\(Self.text(height)) is more than the \(maxPixels) pixels this gateway allows (WORKFLOW_MAX_PIXELS)")
                }
            }
            var batchInputs = ["batch_size"]
            if Self.batchRepeaters.contains(classType) { batchInputs.append("amount") }
            for input in batchInputs where maxBatch > 0 {
                if let size = inputs[input].flatMap(Self.number), size > Double(maxBatch) {
                    throw refuse(input, "a batch of \(Self.text(size)) is more than the \(maxBatch) this gateway allows (WORKFLOW_MAX_BATCH)")
                }
            }
            if maxSteps > 0, let steps = inputs["steps"].flatMap(Self.number), steps > Double(maxSteps) {
                throw refuse("steps", "\(Self.text(steps)) steps are more than the \(maxSteps) this gateway allows (WORKFLOW_MAX_STEPS)")
            }
        }
    }

    /// The number a value gives its node: ComfyUI turns a numeric string into its INT or
    /// FLOAT too, and unwraps `{"__value__": v}`. A link, or anything else, is `nil`.
    static func number(_ value: JSONValue) -> Double? {
        switch value {
        case .number(let number): number
        case .largeInteger: .infinity
        case .string(let text): Double(text.trimmingCharacters(in: .whitespaces))
        case .object(let members) where members.count == 1: members["__value__"].flatMap(number)
        default: nil
        }
    }

    private static func text(_ number: Double) -> String {
        number.isFinite && number == number.rounded() && abs(number) < 1e15 ? String(Int(number)) : String(number)
    }
}
