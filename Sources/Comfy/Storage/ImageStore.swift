import Foundation

/// Where generated images are kept and how callers reach them.
public protocol ImageStore: Sendable {
    /// Stores the image and returns where it can be fetched.
    func store(_ bytes: [UInt8], mimeType: String) async throws -> StoredImage
}

/// A stored image: its name and the URL a caller fetches it from.
public struct StoredImage: Sendable, Equatable {
    /// File name, `<sha256>.<ext>`: equal images share one file, and names never collide.
    public var filename: String
    /// Where callers fetch it: a local path or URL, a signed object-storage URL, or a CDN URL.
    public var url: String
    public var mimeType: String
    /// When a signed URL stops working (wall clock, whole seconds); `nil` for permanent URLs.
    public var expiresAt: Date?

    public init(filename: String, url: String, mimeType: String, expiresAt: Date? = nil) {
        self.filename = filename
        self.url = url
        self.mimeType = mimeType
        self.expiresAt = expiresAt
    }
}

/// Why storing an image failed.
public struct StorageError: Error, Sendable, CustomStringConvertible {
    /// The store that failed: `local`, `s3` or `oss`.
    public var store: String
    public var message: String
    /// When a remote store failed: the URL of the copy kept in local storage.
    public var localURL: String?
    public var description: String { "\(store): \(message)" }

    public init(store: String, message: String, localURL: String? = nil) {
        self.store = store
        self.message = message
        self.localURL = localURL
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
