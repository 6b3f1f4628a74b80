/// An invalid setting: start-up stops with one line naming the variable and the problem.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var variable: String
    public var problem: String

    public init(variable: String, problem: String) {
        self.variable = variable
        self.problem = problem
    }

    public var description: String { "invalid configuration: \(variable): \(problem)" }
}
