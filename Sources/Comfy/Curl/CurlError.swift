/// Why an HTTP exchange did not produce a response.
public struct CurlError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case connectionFailed, timedOut, cancelled, responseTooLarge, tooLate, other }
    public var kind: Kind
    public var message: String

    public var description: String { message }
}

extension CurlError {
    /// A request whose `deadline` passed while it waited for a free thread: not sent.
    static let outwaited = CurlError(kind: .timedOut, message: "not sent: its time ran out while it waited for a free connection")
}
