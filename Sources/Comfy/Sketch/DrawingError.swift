/// Why a drawing request was refused; the session itself stays as it was.
public struct DrawingError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case invalidSessionID, unknownStyle, invalidImage, invalidRequest, noStyles, busy
        /// The session belongs to another API key (`DRAWING_AUTH`).
        case notYours
    }

    public var code: Code
    public var message: String
    public var description: String { message }

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Session ids are `[A-Za-z0-9_-]{1,64}`: they become file and URL names.
    public static func checkSessionID(_ id: String) throws(DrawingError) {
        guard !id.isEmpty, id.count <= 64, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw DrawingError(.invalidSessionID, "session_id must be 1 to 64 letters, digits, '-' or '_'")
        }
    }
}
