/// Filling a tool's workflow in from one call's arguments.
extension WorkflowTool {
    /// Why a call's arguments were refused, naming the parameter.
    public struct CallError: Error, Sendable, Equatable, CustomStringConvertible {
        public var parameter: String
        public var message: String
        public var description: String { message }
    }

    /// A filled-in call: the graph with every value but the images, and each image argument
    /// as sent (a URL, a data URL or base64) with the inputs it goes to.
    public struct Call: Sendable {
        public var workflow: [String: JSONValue]
        public var images: [(parameter: String, value: String, targets: [Target])]
        /// The inputs the caller's arguments set; the rest hold the operator's values.
        public var given: [Target]
    }

    /// Checks every argument against its parameter and writes it into the graph. Names that are
    /// not parameters and not `reservedNames` are refused; `null` means "not given".
    public func call(_ arguments: [String: JSONValue]) throws(CallError) -> Call {
        for name in arguments.keys.sorted() where !Self.reservedNames.contains(name) && !parameters.contains(where: { $0.name == name }) {
            let known = parameters.map(\.name).joined(separator: ", ")
            throw CallError(parameter: name, message: "\(self.name) has no parameter \"\(name.prefix(64))\"; it takes \(known.isEmpty ? "none" : known)")
        }
        var graph = workflow
        var images: [(String, String, [Target])] = []
        var given: [Target] = []
        for parameter in parameters {
            var argument = arguments[parameter.name]
            if argument == .null { argument = nil }
            guard let value = argument ?? parameter.defaultValue else {
                throw CallError(parameter: parameter.name, message: "\(parameter.name) is required (\(parameter.kind.rawValue))")
            }
            // A default is the operator's own value (the workflow's, or `_meta.default`), written
            // as it is: a saved seed past 2^53 must not refuse every call that leaves it out.
            // (The node policy still reads the filled-in graph.)
            let checked = argument == nil ? value : try check(value, for: parameter)
            if parameter.kind == .image, argument != nil {
                images.append((parameter.name, checked.stringValue ?? "", parameter.targets))
                continue
            }
            for target in parameter.targets {
                graph[target.nodeID] = graph[target.nodeID]?.settingInput(target.input, checked)
            }
            if argument != nil { given += parameter.targets }
        }
        return Call(workflow: graph, images: images, given: given)
    }

    private func check(_ value: JSONValue, for parameter: Parameter) throws(CallError) -> JSONValue {
        let name = parameter.name
        func refuse(_ problem: String) -> CallError { CallError(parameter: name, message: "\(name) \(problem)") }
        switch parameter.kind {
        case .string, .image:
            guard let text = value.stringValue else { throw refuse("must be a string") }
            // Code points, not Characters: one Character may carry any number of combining marks.
            guard parameter.kind == .image || text.unicodeScalars.count <= Self.maxStringLength else { throw refuse("is longer than \(Self.maxStringLength) characters") }
            return value
        case .boolean:
            guard value.boolValue != nil else { throw refuse("must be true or false") }
            return value
        case .integer, .number:
            guard let number = value.doubleValue, number.isFinite else { throw refuse("must be a number") }
            if parameter.kind == .integer, number.rounded() != number { throw refuse("must be a whole number, got \(number)") }
            // A whole number past 2^53 is quoted as sent, not as the double nearest to it.
            let sent = if case .largeInteger(let literal) = value { literal } else { Self.format(number) }
            if let minimum = parameter.minimum, number < minimum { throw refuse("must be at least \(Self.format(minimum)), got \(sent)") }
            if let maximum = parameter.maximum, number > maximum { throw refuse("must be at most \(Self.format(maximum)), got \(sent)") }
            return value
        }
    }

    /// A number as people write it: `7`, not `7.0`; a whole one in digits, not `1e+16`.
    public static func format(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 9.2e18 ? String(Int64(number)) : String(number)
    }
}
