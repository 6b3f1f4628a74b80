/// Keys every gateway instance must sign and name with alike (a shared job store keeps them):
/// a drawing session's token made by one instance opens the session on another, and the same
/// input image gets the same name wherever it came in.
public protocol SharedSecrets: Sendable {
    /// The 32-byte key of that name; `nil` for a name the store does not keep.
    func secret(named name: String) -> [UInt8]?
}
