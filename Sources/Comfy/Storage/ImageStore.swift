/// Where generated images are kept and how callers reach them.
public protocol ImageStore: Sendable {
    /// Stores the image and returns where it can be fetched.
    func store(_ bytes: [UInt8], mimeType: String) async throws -> StoredImage
}

/// A stored image: its name and the URL a caller fetches it from.
public struct StoredImage: Sendable, Equatable {
    /// File name, `<sha256>.<ext>`: equal images share one file, and names never collide.
    public var filename: String
    public var url: String
    public var mimeType: String
    /// When a signed URL stops working; `nil` for permanent URLs.
    public var expiresAt: ContinuousClock.Instant?

    public init(filename: String, url: String, mimeType: String, expiresAt: ContinuousClock.Instant? = nil) {
        self.filename = filename
        self.url = url
        self.mimeType = mimeType
        self.expiresAt = expiresAt
    }
}

/// Why storing an image failed.
public struct StorageError: Error, Sendable, CustomStringConvertible {
    public var store: String
    public var message: String
    public var description: String { "\(store): \(message)" }

    public init(store: String, message: String) {
        self.store = store
        self.message = message
    }
}

/// The file extension for an image type.
public func fileExtension(forMimeType mimeType: String) -> String {
    switch mimeType {
    case "image/png": "png"
    case "image/jpeg": "jpg"
    case "image/webp": "webp"
    case "image/gif": "gif"
    default: "bin"
    }
}
