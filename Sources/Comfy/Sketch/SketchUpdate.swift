/// A new sketch from a painter, already checked to be an image within the limits.
public struct SketchUpdate: Sendable {
    public var image: [UInt8]
    public var mimeType: String
    /// Switches the session's style when given.
    public var style: String?
    /// Replaces the positive prompt text when given.
    public var prompt: String?
    /// The painter's client address: painters take turns by it, not by the session ids they
    /// pick (many sessions from one client get one turn). Empty: by session.
    public var clientAddress: String
    /// The API key that sent it, where sessions belong to keys (`DRAWING_AUTH`): the session's
    /// first keyed sketch makes it that key's, and another key's is refused. `nil`: not checked
    /// (the drawing API is open, or the sketch came through a socket its session's token opened).
    public var owner: String?

    public init(image: [UInt8], mimeType: String, style: String?, prompt: String?, clientAddress: String = "", owner: String? = nil) {
        self.image = image
        self.mimeType = mimeType
        self.style = style
        self.prompt = prompt
        self.clientAddress = clientAddress
        self.owner = owner
    }
}
