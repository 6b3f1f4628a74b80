import Foundation

/// What one caller may ask of a GPU server. ComfyUI allocates what a graph says
/// (`EmptyLatentImage` takes up to 16384×16384 and a batch of 4096): one request could hold a
/// GPU for hours or make its host run out of memory. The values a caller gives are checked
/// here, also through `Primitive*` nodes; other computed values are not, nor what several nodes
/// multiply together (chained batch repeats, upscalers), nor the operator's own values in a
/// workflow tool (only the parameters its caller sets).
public struct WorkflowLimits: Sendable, Equatable {
    /// Width × height of one node's image or latent (`width` and `height` inputs); 0: no limit.
    public var maxPixels: Int
    /// Images in one batch (`batch_size`, and the repeat nodes' `amount`); 0: no limit.
    public var maxBatch: Int
    /// Sampling steps (`steps`); 0: no limit.
    public var maxSteps: Int
    /// Video frames (`length`); 0: no limit.
    public var maxFrames: Int

    public init(maxPixels: Int = 4096 * 4096, maxBatch: Int = 64, maxSteps: Int = 150, maxFrames: Int = 257) {
        self.maxPixels = maxPixels
        self.maxBatch = maxBatch
        self.maxSteps = maxSteps
        self.maxFrames = maxFrames
    }

    public static let none = WorkflowLimits(maxPixels: 0, maxBatch: 0, maxSteps: 0, maxFrames: 0)

    /// Nodes whose `amount` input multiplies a batch.
    static let batchRepeaters: Set<String> = ["RepeatLatentBatch", "RepeatImageBatch"]
    /// Nodes whose `value` is passed on as it is: a link from them carries that value.
    static let primitives: Set<String> = ["PrimitiveInt", "PrimitiveFloat", "PrimitiveNode"]

    /// Refuses the first node that asks for more than the limits allow, among the inputs the
    /// caller gave (`given`; every input of a caller's own graph).
    public func check(_ workflow: [String: JSONValue], given: (_ nodeID: String, _ input: String) -> Bool = { _, _ in true }) throws(WorkflowRejection) {
        for id in workflow.keys.sorted() {
            guard let node = workflow[id], let classType = node["class_type"]?.stringValue, let inputs = node["inputs"]?.objectValue else { continue }
            func refuse(_ input: String, _ problem: String) -> WorkflowRejection {
                WorkflowRejection(nodeID: id, classType: classType, input: input, message: "node \"\(id)\" (\(classType)) input \(input): \(problem)")
            }
            func value(_ input: String) -> Double? {
                guard let raw = inputs[input], given(id, input) || Self.primitive(linkedBy: raw, in: workflow).map({ given($0, "value") }) == true else { return nil }
                return Self.number(raw, in: workflow)
            }
            if maxPixels > 0 {
                let (width, height) = (value("width"), value("height"))
                // Caller's or not, the other side counts: only one of them may have been given.
                let sides = [width ?? Self.number(inputs["width"], in: workflow), height ?? Self.number(inputs["height"], in: workflow)]
                if width != nil || height != nil, let area = Self.area(sides[0], sides[1]), area > Double(maxPixels) {
                    throw refuse((width ?? -1) >= (height ?? -1) ? "width" : "height", "\(Self.text(sides[0]))×\(Self.text(sides[1])) is more than the \(maxPixels) pixels this gateway allows (WORKFLOW_MAX_PIXELS)")
                }
            }
            var counts: [(input: String, limit: Int, variable: String, what: (String) -> String)] = [
                ("batch_size", maxBatch, "WORKFLOW_MAX_BATCH", { "a batch of \($0) is" }), ("steps", maxSteps, "WORKFLOW_MAX_STEPS", { "\($0) steps are" }),
                ("length", maxFrames, "WORKFLOW_MAX_FRAMES", { "\($0) frames are" }),
            ]
            if Self.batchRepeaters.contains(classType) { counts.append(("amount", maxBatch, "WORKFLOW_MAX_BATCH", { "a batch of \($0) is" })) }
            for (input, limit, variable, what) in counts where limit > 0 {
                if let count = value(input), count > Double(limit) {
                    throw refuse(input, "\(what(Self.text(count))) more than the \(limit) this gateway allows (\(variable))")
                }
            }
        }
    }

    /// The number a value gives its node; `nil` when another node computes it, or it is no
    /// number at all (ComfyUI then decides). ComfyUI unwraps `{"__value__": v}` (whatever else
    /// the object holds) and reads a string with Python's `int()` or `float()`, which also take
    /// `16_384` and other scripts' digits; a link from a `Primitive*` node carries its value.
    static func number(_ value: JSONValue?, in workflow: [String: JSONValue], depth: Int = 0) -> Double? {
        guard let value, depth < 8 else { return nil }
        switch value {
        case .number(let number):
            return number
        case .largeInteger:
            return .infinity
        case .string(let text):
            return pythonNumber(text)
        case .object(let members):
            return number(members["__value__"], in: workflow, depth: depth + 1)
        case .array(let link) where link.count == 2:
            guard let source = link[0].stringValue, let node = workflow[source], let classType = node["class_type"]?.stringValue,
                primitives.contains(classType)
            else { return nil }
            return number(node["inputs"]?["value"], in: workflow, depth: depth + 1)
        default:
            return nil
        }
    }

    /// The `Primitive*` node a link comes from (a tool's parameter may be declared on one).
    static func primitive(linkedBy value: JSONValue, in workflow: [String: JSONValue]) -> String? {
        guard case .array(let link) = value, link.count == 2, let source = link[0].stringValue,
            let classType = workflow[source]?["class_type"]?.stringValue, primitives.contains(classType)
        else { return nil }
        return source
    }

    /// What Python's `int()` (or, for a plain decimal, `float()`) makes of a string; `nil` for
    /// one it refuses.
    static func pythonNumber(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.unicodeScalars.allSatisfy(\.isASCII), let plain = Double(trimmed) { return plain }
        var digits = Substring(trimmed)
        var sign = 1.0
        if let first = digits.first, first == "-" || first == "+" {
            sign = first == "-" ? -1 : 1
            digits = digits.dropFirst()
        }
        guard !digits.isEmpty, !digits.hasPrefix("_"), !digits.hasSuffix("_"), !digits.contains("__") else { return nil }
        var number = 0.0
        for character in digits where character != "_" {
            guard let digit = character.wholeNumberValue, character.isNumber, (0...9).contains(digit) else { return nil }
            number = number * 10 + Double(digit)
        }
        return sign * number
    }

    /// The area of an image of these sides. A side of 0 or less is computed by ComfyUI from the
    /// other and the source's aspect (`ImageScale`): the square of the other is the bound here.
    static func area(_ width: Double?, _ height: Double?) -> Double? {
        guard let width, let height else { return nil }
        if width <= 0, height <= 0 { return nil }
        if width <= 0 { return height * height }
        if height <= 0 { return width * width }
        return width * height
    }

    private static func text(_ number: Double?) -> String {
        guard let number else { return "?" }
        return number.isFinite && number == number.rounded() && abs(number) < 1e15 ? String(Int(number)) : String(number)
    }
}
