/// A new sketch from a painter, already checked to be an image within the limits.
public struct SketchUpdate: Sendable {
    public var image: [UInt8]
    public var mimeType: String
    /// Switches the session's style when given.
    public var style: String?
    /// Replaces the positive prompt text when given.
    public var prompt: String?

    public init(image: [UInt8], mimeType: String, style: String?, prompt: String?) {
        self.image = image
        self.mimeType = mimeType
        self.style = style
        self.prompt = prompt
    }
}
