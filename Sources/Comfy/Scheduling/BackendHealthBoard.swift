/// Backend health as every gateway instance sees it: a backend one instance finds down is
/// avoided by all, for as long as that instance keeps finding it so (its report is leased, so
/// a dead instance's report runs out). An instance that reaches the backend itself does not
/// overrule the report: a hung backend may answer its probes and still run nothing.
public protocol BackendHealthBoard: Sendable {
    /// Publishes this instance's view of a backend: down (with why), or no longer down.
    func report(backend: String, down: Bool, reason: String?) async

    /// Calls `update` with the backends other instances find down, now and at every change,
    /// until cancelled.
    func followReports(_ update: @Sendable ([String: BackendReport]) async -> Void) async
}

/// Another instance finds a backend down.
public struct BackendReport: Sendable, Equatable {
    public var instance: String
    public var reason: String?

    public init(instance: String, reason: String?) {
        self.instance = instance
        self.reason = reason
    }
}
