/// Why an input image of a call was refused, naming the field or parameter that held it.
public struct InputImageError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Not a URL, data URL or base64, or not an acceptable image.
        case invalid
        /// Above `INPUT_MAX_BYTES` or `INPUT_MAX_PIXELS`.
        case tooLarge
        /// A URL the gateway may not fetch (SSRF rules).
        case refused
        /// The URL did not give an image: an HTTP error, a timeout, too many redirects.
        case unreachable
        /// The gateway had no place to look its host up or fetch it in time (`OwnerShares`):
        /// nothing wrong with the URL; the same call later may pass.
        case busy
    }

    public var kind: Kind
    public var field: String
    public var message: String
    public var description: String { message }

    public init(_ kind: Kind, field: String, _ message: String) {
        self.kind = kind
        self.field = field
        self.message = message
    }
}
