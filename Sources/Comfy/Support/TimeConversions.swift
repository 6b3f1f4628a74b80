import Foundation

extension Date {
    /// Milliseconds since 1970, as the job store keeps times.
    public var milliseconds: Int { Int((timeIntervalSince1970 * 1000).rounded()) }
    public init(milliseconds: Int) { self.init(timeIntervalSince1970: Double(milliseconds) / 1000) }
}

extension Duration {
    /// The duration in seconds, as a `TimeInterval`.
    public var seconds: TimeInterval {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
