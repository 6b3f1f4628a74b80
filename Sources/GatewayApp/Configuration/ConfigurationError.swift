/// An invalid setting: start-up stops with one line naming the variable and the problem.
struct ConfigurationError: Error, CustomStringConvertible {
    var variable: String
    var problem: String

    var description: String { "invalid configuration: \(variable): \(problem)" }
}
