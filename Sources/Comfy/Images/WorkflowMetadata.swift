/// ComfyUI writes the graph it ran into every PNG it saves: text chunks named `prompt` (the
/// API graph) and `workflow` (the editor's, when it sent one). A style's or a workflow tool's
/// graph, the operator's, would be readable by whoever gets the image; so is every input's
/// server-side file name. The gateway takes those two chunks out (`PNG_WORKFLOW_METADATA=keep`
/// leaves them, for people who load results back into ComfyUI).
public enum WorkflowMetadata {
    /// The keywords of ComfyUI's chunks.
    static let keywords: Set<String> = ["prompt", "workflow"]

    /// The image without ComfyUI's graph chunks; anything but a PNG it can walk, as it is.
    public static func removed(from image: ImageData) -> ImageData {
        guard let bytes = removed(fromPNG: image.bytes) else { return image }
        return ImageData(bytes: bytes, mimeType: image.mimeType)
    }

    /// The PNG's bytes without them; `nil` when there was none to remove, or it is no PNG
    /// (a malformed or truncated one is left to whoever reads it, as ComfyUI made it).
    static func removed(fromPNG bytes: [UInt8]) -> [UInt8]? {
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        guard bytes.starts(with: signature) else { return nil }
        var kept = [Range<Int>]()
        var offset = signature.count
        var removedAny = false
        var ended = false
        while !ended, offset + 12 <= bytes.count {
            let length = bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            let end = offset + 12 + length
            guard length < 1 << 31, end <= bytes.count else { return nil }
            let data = bytes[(offset + 8)..<(offset + 8 + length)]
            // tEXt, zTXt and iTXt all begin with the keyword and a NUL.
            if ["tEXt", "zTXt", "iTXt"].contains(type), let nul = data.firstIndex(of: 0),
                keywords.contains(String(decoding: data[data.startIndex..<nul], as: UTF8.self))
            {
                removedAny = true
            } else {
                kept.append(offset..<end)
            }
            offset = end
            ended = type == "IEND"
        }
        guard removedAny, ended else { return nil }
        var out = Array(bytes[0..<signature.count])
        out.reserveCapacity(bytes.count)
        for range in kept { out += bytes[range] }
        // Whatever follows IEND stays where it was.
        out += bytes[offset...]
        return out
    }
}
