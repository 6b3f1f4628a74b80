@testable import Comfy
import Testing

/// ComfyUI's graph chunks leave a PNG; everything else stays, byte for byte.
struct WorkflowMetadataTests {
    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let length = UInt32(data.count)
        return [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + Array(type.utf8) + data + [1, 2, 3, 4]
    }

    static func text(_ keyword: String, _ value: String) -> [UInt8] { Array(keyword.utf8) + [0] + Array(value.utf8) }

    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    @Test func thePromptAndWorkflowChunksGoAndTheRestStaysAsItWas() {
        let header = Self.chunk("IHDR", Array(repeating: 7, count: 13))
        let kept = Self.chunk("tEXt", Self.text("Software", "ComfyUI"))
        let pixels = Self.chunk("IDAT", [9, 9, 9])
        let end = Self.chunk("IEND", [])
        let png = Self.signature + header + Self.chunk("tEXt", Self.text("prompt", #"{"1": {}}"#)) + kept
            + Self.chunk("iTXt", Self.text("workflow", "\0\0\0\0{}")) + pixels + Self.chunk("zTXt", Self.text("prompt", "\0x")) + end + [0xAA]
        let image = WorkflowMetadata.removed(from: ImageData(bytes: png, mimeType: "image/png"))
        #expect(image.bytes == Self.signature + header + kept + pixels + end + [0xAA])
        #expect(image.mimeType == "image/png")
    }

    @Test func anImageWithoutThemOrNoPNGOrATruncatedOneIsLeftAsItIs() {
        let plain = Self.signature + Self.chunk("IHDR", [1]) + Self.chunk("tEXt", Self.text("prompts", "x")) + Self.chunk("IEND", [])
        #expect(WorkflowMetadata.removed(from: ImageData(bytes: plain, mimeType: "image/png")).bytes == plain)
        let jpeg: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0] + Array("prompt".utf8)
        #expect(WorkflowMetadata.removed(from: ImageData(bytes: jpeg, mimeType: "image/jpeg")).bytes == jpeg)
        let truncated = Array((Self.signature + Self.chunk("tEXt", Self.text("prompt", "{}")) + Self.chunk("IEND", [])).dropLast(6))
        #expect(WorkflowMetadata.removed(from: ImageData(bytes: truncated, mimeType: "image/png")).bytes == truncated)
    }
}

/// An animated WEBP's EXIF, where ComfyUI puts the graph, goes; the rest stays.
struct WebPWorkflowMetadataTests {
    static func chunk(_ fourCC: String, _ data: [UInt8]) -> [UInt8] {
        let size = UInt32(data.count)
        return Array(fourCC.utf8) + [UInt8(size & 0xFF), UInt8(size >> 8 & 0xFF), UInt8(size >> 16 & 0xFF), UInt8(size >> 24)] + data + (data.count % 2 == 1 ? [0] : [])
    }

    static func riff(_ chunks: [UInt8]) -> [UInt8] {
        let size = UInt32(chunks.count + 4)
        return Array("RIFF".utf8) + [UInt8(size & 0xFF), UInt8(size >> 8 & 0xFF), UInt8(size >> 16 & 0xFF), UInt8(size >> 24)] + Array("WEBP".utf8) + chunks
    }

    @Test func theEXIFChunkGoesItsFlagIsClearedAndTheSizesAgree() {
        // VP8X flags: animation (0x02) and EXIF (0x08).
        let header = Self.chunk("VP8X", [0x0A, 0, 0, 0, 15, 0, 0, 15, 0, 0])
        let animation = Self.chunk("ANIM", [0, 0, 0, 0, 0, 0])
        let frame = Self.chunk("ANMF", Array(repeating: 5, count: 17))
        let exif = Self.chunk("EXIF", Array("II*\0 prompt:{\"1\": {}}".utf8))
        let webp = Self.riff(header + animation + frame + exif)
        let image = WorkflowMetadata.removed(from: ImageData(bytes: webp, mimeType: "image/webp"))
        let expected = Self.riff(Self.chunk("VP8X", [0x02, 0, 0, 0, 15, 0, 0, 15, 0, 0]) + animation + frame)
        #expect(image.bytes == expected)
    }

    @Test func aWEBPWithoutEXIFOrATruncatedOneIsLeftAsItIs() {
        let plain = Self.riff(Self.chunk("VP8L", [1, 2, 3]))
        #expect(WorkflowMetadata.removed(from: ImageData(bytes: plain, mimeType: "image/webp")).bytes == plain)
        let truncated = Array(Self.riff(Self.chunk("VP8L", [1, 2, 3, 4]) + Self.chunk("EXIF", [1, 2, 3, 4])).dropLast(3))
        #expect(WorkflowMetadata.removed(from: ImageData(bytes: truncated, mimeType: "image/webp")).bytes == truncated)
    }
}
