/// A binary `/ws` frame: `[u32 BE event][payload]` (ComfyUI `protocol.py` BinaryEventTypes).
public enum ComfyBinaryFrame: Sendable, Equatable {
    /// Type 1: SaveImageWebsocket results and latent previews; no prompt id on the wire.
    case image(format: ComfyImageFormat, bytes: [UInt8])
    /// Type 4, sent instead of type 1 once `supports_preview_metadata` was negotiated.
    case imageWithMetadata(promptID: String?, nodeID: String?, mimeType: String?, bytes: [UInt8])
    /// Type 3: `send_progress_text`, always broadcast.
    case text(nodeID: String, text: String)
    case unknown(event: UInt32)

    /// Parses one frame; `nil` when it is too short to hold its own header.
    public static func decode(_ bytes: [UInt8]) -> ComfyBinaryFrame? {
        guard let event = bytes.readUInt32(at: 0) else { return nil }
        switch event {
        case 1:
            guard let format = bytes.readUInt32(at: 4) else { return nil }
            return .image(format: ComfyImageFormat(code: format), bytes: Array(bytes[8...]))
        case 4:
            guard let length = bytes.readUInt32(at: 4), bytes.count >= 8 + Int(length) else { return nil }
            let metadata = try? JSONValue.parse(bytes[8..<(8 + Int(length))])
            return .imageWithMetadata(
                promptID: metadata?["prompt_id"]?.stringValue,
                nodeID: metadata?["node_id"]?.stringValue,
                mimeType: metadata?["image_type"]?.stringValue,
                bytes: Array(bytes[(8 + Int(length))...])
            )
        case 3:
            guard let length = bytes.readUInt32(at: 4), bytes.count >= 8 + Int(length) else { return nil }
            let node = String(decoding: bytes[8..<(8 + Int(length))], as: UTF8.self)
            let text = String(decoding: bytes[(8 + Int(length))...], as: UTF8.self)
            return .text(nodeID: node, text: text)
        default:
            return .unknown(event: event)
        }
    }
}

/// The image format code of a type-1 frame.
public enum ComfyImageFormat: Sendable, Equatable {
    case jpeg, png, other(UInt32)

    init(code: UInt32) {
        switch code {
        case 1: self = .jpeg
        case 2: self = .png
        default: self = .other(code)
        }
    }
}

extension Array where Element == UInt8 {
    func readUInt32(at offset: Int) -> UInt32? {
        guard count >= offset + 4 else { return nil }
        return self[offset..<offset + 4].reduce(0) { ($0 << 8) | UInt32($1) }
    }
}
