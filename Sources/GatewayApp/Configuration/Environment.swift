import Comfy
import Foundation

/// Configuration variables: the process environment over an optional `.env` file (environment wins).
public struct Environment: Sendable {
    private var values: [String: String]

    /// The process environment over `dotEnvPath` when that file exists; a file that cannot be
    /// read (no permission, not UTF-8) or is malformed stops start-up, rather than be ignored.
    public init(processEnvironment: [String: String] = ProcessInfo.processInfo.environment, dotEnvPath: String = ".env") throws {
        var values: [String: String] = [:]
        if FileManager.default.fileExists(atPath: dotEnvPath) {
            let text: String
            do {
                text = try String(contentsOfFile: dotEnvPath, encoding: .utf8)
            } catch {
                throw ConfigurationError(variable: dotEnvPath, problem: "cannot be read as UTF-8 text: \(error.localizedDescription)")
            }
            do {
                values = try DotEnv.parse(text, environment: processEnvironment)
            } catch {
                throw ConfigurationError(variable: dotEnvPath, problem: "line \(error.line): \(error.problem)")
            }
        }
        values.merge(processEnvironment) { _, environment in environment }
        self.values = values
    }

    /// Every variable, for the child processes the supervisor starts.
    public var all: [String: String] { values }

    public init(_ values: [String: String]) {
        self.values = values
    }

    /// The value, or `nil` when unset or empty.
    subscript(_ name: String) -> String? {
        guard let value = values[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        return value
    }

    func integer(_ name: String, default fallback: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = self[name] else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw ConfigurationError(variable: name, problem: "expected a whole number in \(range.lowerBound)...\(range.upperBound), got \"\(text)\"")
        }
        return value
    }

    func boolean(_ name: String, default fallback: Bool) throws -> Bool {
        guard let text = self[name]?.lowercased() else { return fallback }
        switch text {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw ConfigurationError(variable: name, problem: "expected true or false, got \"\(text)\"")
        }
    }

    /// A comma-separated list; blanks dropped.
    func list(_ name: String) -> [String] {
        (self[name] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// The pages allowed by a list of origins (`scheme://host[:port]` or `*`) besides `SERVER_BASE_URL`'s.
    func origins(_ name: String, publicBaseURL: String) throws -> OriginPolicy {
        do {
            return try OriginPolicy(publicBaseURL: publicBaseURL, allowed: list(name))
        } catch {
            let variable = error.text == publicBaseURL ? "SERVER_BASE_URL" : name
            throw ConfigurationError(variable: variable, problem: "\"\(error.text)\" is not an origin like https://paint.example.com or http://10.0.0.5:8000")
        }
    }

    /// `NODE_POLICY` (`deny` with the built-in list plus `NODE_DENY`, or `allow` with `NODE_ALLOW`).
    func nodePolicy() throws -> NodePolicy {
        switch self["NODE_POLICY"]?.lowercased() ?? "deny" {
        case "deny":
            return NodePolicy(classes: .deny(NodePolicy.defaultDenied.union(list("NODE_DENY"))))
        case "allow":
            let allowed = Set(list("NODE_ALLOW"))
            guard !allowed.isEmpty else {
                throw ConfigurationError(variable: "NODE_ALLOW", problem: "NODE_POLICY=allow needs the node classes that may run, comma-separated")
            }
            return NodePolicy(classes: .allow(allowed))
        case let other:
            throw ConfigurationError(variable: "NODE_POLICY", problem: "expected deny or allow, got \"\(other)\"")
        }
    }

    /// A duration such as `600`, `500ms`, `90s`, `10m`, `2h` or `7d` (plain numbers are seconds).
    func duration(_ name: String, default fallback: Duration) throws -> Duration {
        guard let text = self[name] else { return fallback }
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if text.hasSuffix("ms"), let value = Int64(text.dropLast(2)), value > 0 {
            return .milliseconds(value)
        }
        var number = Substring(text)
        var scale: Int64 = 1
        if let last = text.last, let unit = units[last] {
            number = number.dropLast()
            scale = unit
        }
        guard let value = Int64(number), value > 0 else {
            throw ConfigurationError(variable: name, problem: "expected a duration like 600, 500ms, 90s, 10m, 2h or 7d, got \"\(text)\"")
        }
        return .seconds(value * scale)
    }
}
