import Comfy
import Foundation

/// Sketch images and styles for the drawing tests.
enum Sketches {
    /// A valid grayscale PNG whose pixels depend on `seed` (stored deflate blocks: no zlib needed).
    static func png(seed: Int, width: Int = 32, height: Int = 32) -> [UInt8] {
        var raw = [UInt8]()
        for y in 0..<height {
            raw.append(0)  // filter: none
            for x in 0..<width { raw.append(UInt8(truncatingIfNeeded: x &* 7 &+ y &* 13 &+ seed &* 31)) }
        }
        var zlib: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let count = min(65535, raw.count - offset)
            let last: UInt8 = offset + count == raw.count ? 1 : 0
            zlib += [last, UInt8(count & 0xFF), UInt8(count >> 8), UInt8(~count & 0xFF), UInt8((~count >> 8) & 0xFF)]
            zlib += raw[offset..<offset + count]
            offset += count
        } while offset < raw.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in raw { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
        zlib += bigEndian((b << 16) | a)
        var ihdr = bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        ihdr += [8, 0, 0, 0, 0]  // 8-bit grayscale
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", zlib) + chunk("IEND", [])
    }

    /// A PNG header that declares a huge canvas: a decompression bomb's signature.
    static func bombHeader() -> [UInt8] {
        var ihdr = bigEndian(UInt32(100_000)) + bigEndian(UInt32(100_000))
        ihdr += [8, 0, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", [0x78, 0x01, 1, 0, 0, 0xFF, 0xFF, 0, 0, 0, 1]) + chunk("IEND", [])
    }

    /// A PNG header declaring 2^32-1 × 2^32-1 pixels: their product overflows a 64-bit integer.
    static func overflowHeader() -> [UInt8] {
        let ihdr = bigEndian(UInt32.max) + bigEndian(UInt32.max) + [8, 0, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IEND", [])
    }

    /// A small PNG that declares itself animated (an `acTL` chunk before the image data).
    static func animated() -> [UInt8] {
        let plain = png(seed: 5)
        // Signature (8) + IHDR chunk (25), then acTL (2 frames, loop forever).
        return Array(plain[0..<33]) + chunk("acTL", bigEndian(2) + bigEndian(0)) + Array(plain[33...])
    }

    /// The img2img style the tests install (the captured real workflow, emulator checkpoint).
    static func style(text: String = "a house on a hill") -> [String: JSONValue] {
        [
            "1": .object(["class_type": "CheckpointLoaderSimple", "inputs": .object(["ckpt_name": "emulator.safetensors"])]),
            "2": .object(["class_type": "CLIPTextEncode", "inputs": .object(["text": .string(text), "clip": Workflows.link("1", 1)]), "_meta": .object(["title": "positive"])]),
            "3": .object(["class_type": "CLIPTextEncode", "inputs": .object(["text": "blurry", "clip": Workflows.link("1", 1)])]),
            "4": .object(["class_type": "LoadImage", "inputs": .object(["image": "example.png"]), "_meta": .object(["title": "sketch"])]),
            "5": .object(["class_type": "VAEEncode", "inputs": .object(["pixels": Workflows.link("4", 0), "vae": Workflows.link("1", 2)])]),
            "6": .object(["class_type": "KSampler", "inputs": .object([
                "seed": 42, "steps": 3, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": .number(0.6),
                "model": Workflows.link("1", 0), "positive": Workflows.link("2", 0), "negative": Workflows.link("3", 0), "latent_image": Workflows.link("5", 0),
            ])]),
            "7": .object(["class_type": "VAEDecode", "inputs": .object(["samples": Workflows.link("6", 0), "vae": Workflows.link("1", 2)])]),
            "8": .object(["class_type": "SaveImageWebsocket", "inputs": .object(["images": Workflows.link("7", 0)])]),
        ]
    }

    static func install(_ workflow: [String: JSONValue], as name: String, in gateway: Gateway) throws {
        try Data(JSONValue.object(workflow).encoded()).write(to: URL(fileURLWithPath: "\(gateway.workflowDirectory)/\(name).json"))
    }

    private static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + data
        return bigEndian(UInt32(data.count)) + typed + bigEndian(crc32(typed))
    }

    private static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    private static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (0xEDB8_8320 & (0 &- (crc & 1))) }
        }
        return ~crc
    }
}

/// A multipart/form-data body for `/api/sketch` (or, with the file in the part named by a
/// node id, for `/api/generate`).
func sketchForm(file: [UInt8]?, fields: [String: String], fileField: String = "file") -> (body: [UInt8], contentType: String) {
    let boundary = "test-\(UUID().uuidString)"
    var body = [UInt8]()
    for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
        body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
    }
    if let file {
        body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(fileField)\"; filename=\"sketch.png\"\r\nContent-Type: image/png\r\n\r\n".utf8)
        body += file + Array("\r\n".utf8)
    }
    body += Array("--\(boundary)--\r\n".utf8)
    return (body, "multipart/form-data; boundary=\(boundary)")
}
