import Comfy

/// A random key the gateway keeps to itself: in the shared store when there is one (every
/// instance then uses the same), else in `STATE_DIR/<name>.key`, made the first time.
enum StateSecret {
    /// - Parameter neededBy: what needs it, for the error when `STATE_DIR` cannot keep it.
    static func load(_ name: String, stateDirectory: String, shared: (any SharedSecrets)?, neededBy: String? = nil) throws -> [UInt8] {
        if let key = shared?.secret(named: name) { return key }
        do {
            return try RandomSecret.loadOrCreate(at: "\(stateDirectory)/\(name).key")
        } catch {
            throw ConfigurationError(variable: "STATE_DIR", problem: error.description + (neededBy.map { " (\($0) needs it)" } ?? ""))
        }
    }
}
