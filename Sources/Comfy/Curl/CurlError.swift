/// Why an HTTP exchange did not produce a response.
public struct CurlError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case connectionFailed, timedOut, cancelled, responseTooLarge, tooLate, other }
    public var kind: Kind
    public var message: String

    public var description: String { message }
}
