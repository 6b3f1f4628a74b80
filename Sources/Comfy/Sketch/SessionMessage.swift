import Foundation

/// What a drawing session tells its painters' WebSockets (the original drawing API's server messages).
public enum SessionMessage: Sendable, Equatable {
    case processing(progress: Double)
    case completed(resultURL: String, imageURL: String)
    case error(message: String)
    /// A latent preview while sampling; only to sockets that asked for previews.
    case preview(mimeType: String, bytes: [UInt8])

    /// The JSON text frame, exactly the seed's fields (extra ones allowed, none missing).
    public var json: JSONValue {
        switch self {
        case .processing(let progress):
            return .object(["status": "processing", "progress": .number((progress * 1000).rounded() / 1000)])
        case .completed(let resultURL, let imageURL):
            return .object(["status": "completed", "result_url": .string(resultURL), "image_url": .string(imageURL)])
        case .error(let message):
            return .object(["status": "error", "message": .string(message)])
        case .preview(let mimeType, let bytes):
            return .object(["status": "preview", "image": .string("data:\(mimeType);base64,\(Data(bytes).base64EncodedString())")])
        }
    }

    var isPreview: Bool {
        if case .preview = self { return true }
        return false
    }
}
