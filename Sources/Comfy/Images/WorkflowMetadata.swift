/// ComfyUI writes the graph it ran into the images it saves: in a PNG, text chunks named
/// `prompt` (the API graph) and `workflow` (the editor's, when it sent one), in `comf` chunks
/// in an animated PNG; in an animated WEBP, its EXIF. A style's or a workflow tool's graph, the
/// operator's, would be readable by whoever gets the image; so is every input's server-side
/// file name. The gateway takes them out (`PNG_WORKFLOW_METADATA=keep` leaves them, for people
/// who load results back into ComfyUI).
public enum WorkflowMetadata {
    /// The keywords of ComfyUI's chunks.
    static let keywords: Set<String> = ["prompt", "workflow"]

    /// The image without ComfyUI's graph; anything but a PNG or WEBP it can walk, as it is.
    public static func removed(from image: ImageData) -> ImageData {
        guard let bytes = removed(fromPNG: image.bytes) ?? removed(fromWEBP: image.bytes) else { return image }
        return ImageData(bytes: bytes, mimeType: image.mimeType)
    }

    /// The WEBP's bytes without its EXIF chunk (ComfyUI's `SaveAnimatedWEBP` writes the graph
    /// there; nothing else of it matters for a generated image), its flag cleared in `VP8X`;
    /// `nil` when it has none, or it is no WEBP this can walk.
    static func removed(fromWEBP bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count >= 12, bytes.starts(with: Array("RIFF".utf8)), Array(bytes[8..<12]) == Array("WEBP".utf8) else { return nil }
        var out = Array(bytes[0..<12])
        var offset = 12
        var removedAny = false
        while offset + 8 <= bytes.count {
            let size = bytes[(offset + 4)..<(offset + 8)].reversed().reduce(0) { $0 << 8 | Int($1) }
            // Chunks are padded to an even size.
            let end = offset + 8 + size + (size & 1)
            guard end <= bytes.count || (end == bytes.count + 1 && size & 1 == 1) else { return nil }
            let chunk = bytes[offset..<min(end, bytes.count)]
            if Array(bytes[offset..<(offset + 4)]) == Array("EXIF".utf8) {
                removedAny = true
            } else {
                out += chunk
            }
            offset = end
        }
        guard removedAny, offset >= bytes.count else { return nil }
        // VP8X's flags: bit 3 says an EXIF chunk follows.
        if out.count >= 21, Array(out[12..<16]) == Array("VP8X".utf8) { out[20] &= ~0x08 }
        let riffSize = UInt32(out.count - 8)
        out.replaceSubrange(4..<8, with: [UInt8(riffSize & 0xFF), UInt8(riffSize >> 8 & 0xFF), UInt8(riffSize >> 16 & 0xFF), UInt8(riffSize >> 24)])
        return out
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
            // tEXt, zTXt and iTXt all begin with the keyword and a NUL; so does `comf`, where
            // SaveAnimatedPNG puts them (after the image data).
            if ["tEXt", "zTXt", "iTXt", "comf"].contains(type), let nul = data.firstIndex(of: 0),
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
