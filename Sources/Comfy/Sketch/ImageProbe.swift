import Foundation

/// Reads an image's format and pixel size from its header, without decoding it, so that a
/// decompression bomb (a small file declaring a huge canvas) is refused before any decoder runs.
public struct ImageProbe: Sendable, Equatable {
    public var mimeType: String
    public var width: Int
    public var height: Int

    /// width × height; `nil` when it overflows (header fields reach 2^32 - 1 each).
    public var pixels: Int? {
        let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
        return overflow ? nil : pixels
    }

    /// Why bytes are not an acceptable image.
    public struct Rejection: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Probes PNG, JPEG and WebP; the file must be complete (PNG `IEND`, JPEG `EOI`).
    public static func probe(_ bytes: [UInt8]) throws(Rejection) -> ImageProbe {
        let probe: ImageProbe
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            probe = try png(bytes)
        } else if bytes.starts(with: [0xFF, 0xD8, 0xFF]) {
            probe = try jpeg(bytes)
        } else if bytes.count >= 12, bytes.starts(with: Array("RIFF".utf8)), Array(bytes[8..<12]) == Array("WEBP".utf8) {
            probe = try webp(bytes)
        } else {
            throw Rejection(description: "not a PNG, JPEG or WebP image")
        }
        // A JPEG may leave its height to a later DNL marker: a size of 0 would pass any pixel
        // limit and be decided only by the decoder (found by the image_probe fuzz target).
        guard probe.width > 0, probe.height > 0 else { throw Rejection(description: "the image declares no size (\(probe.width)×\(probe.height))") }
        return probe
    }

    private static func png(_ bytes: [UInt8]) throws(Rejection) -> ImageProbe {
        guard bytes.count >= 33, Array(bytes[12..<16]) == Array("IHDR".utf8) else { throw Rejection(description: "truncated PNG (no header)") }
        guard bytes.suffix(12).starts(with: [0, 0, 0, 0]) && Array(bytes.suffix(8).prefix(4)) == Array("IEND".utf8) else {
            throw Rejection(description: "truncated PNG (no IEND chunk)")
        }
        guard bigEndian(bytes, 8, 4) == 13 else { throw Rejection(description: "corrupt PNG (its header chunk is not 13 bytes)") }
        // ComfyUI's LoadImage decodes every frame of an APNG: the pixel limit would hold per frame only.
        // A second IHDR is refused: Pillow takes the size of the last one before the image data,
        // so a small first header would hide a huge canvas from this probe.
        var offset = 8 + 12 + 13
        while offset + 8 <= bytes.count {
            let type = Array(bytes[offset + 4..<offset + 8])
            if type == Array("acTL".utf8) { throw Rejection(description: "animated PNGs are not accepted") }
            if type == Array("IHDR".utf8) { throw Rejection(description: "a PNG with two header chunks is not accepted") }
            if type == Array("IDAT".utf8) { break }
            offset += 12 + bigEndian(bytes, offset, 4)
        }
        return ImageProbe(mimeType: "image/png", width: bigEndian(bytes, 16, 4), height: bigEndian(bytes, 20, 4))
    }

    /// Reads the frame header, walking the segments up to the scan. Only the segments that may
    /// come before a frame are accepted on the way (a marker without a length, such as RST or
    /// TEM, would be skipped by a decoder and make this walk land on a forged frame header),
    /// and a second frame header is refused (decoders take the last one). So is a multi-picture
    /// JPEG (MPO): Pillow opens one by its APP2 `MPF` segment as several frames, and ComfyUI's
    /// LoadImage converts every frame before it keeps the first, so the pixel limit would hold
    /// per frame only.
    private static func jpeg(_ bytes: [UInt8]) throws(Rejection) -> ImageProbe {
        guard bytes.suffix(2) == [0xFF, 0xD9] else { throw Rejection(description: "truncated JPEG (no end marker)") }
        var offset = 2
        var frame: ImageProbe?
        while offset + 4 <= bytes.count {
            guard bytes[offset] == 0xFF else { throw Rejection(description: "corrupt JPEG") }
            let marker = bytes[offset + 1]
            if marker == 0xFF { offset += 1; continue }
            // SOS: the entropy-coded data follows; the frame must be known by now.
            if marker == 0xDA { break }
            let length = bigEndian(bytes, offset + 2, 2)
            guard length >= 2, offset + 2 + length <= bytes.count else { throw Rejection(description: "corrupt JPEG") }
            // SOF0...SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
            if isMultiPictureIndex(bytes, at: offset) {
                throw Rejection(description: "multi-picture JPEGs (MPO) are not accepted")
            }
            if (0xC0...0xCF).contains(marker), ![0xC4, 0xC8, 0xCC].contains(marker) {
                guard frame == nil else { throw Rejection(description: "a JPEG with two frame headers is not accepted") }
                guard length >= 8 else { throw Rejection(description: "corrupt JPEG") }
                frame = ImageProbe(mimeType: "image/jpeg", width: bigEndian(bytes, offset + 7, 2), height: bigEndian(bytes, offset + 5, 2))
            } else if !Self.jpegTableMarkers.contains(marker) {
                throw Rejection(description: String(format: "a JPEG segment FF%02X before the scan is not accepted", marker))
            }
            offset += 2 + length
        }
        guard let frame else { throw Rejection(description: "truncated JPEG (no frame header)") }
        return frame
    }

    /// APP0–APP15, COM, DQT, DHT, DRI, DAC, DNL and EXP: what may precede the first scan.
    static let jpegTableMarkers: Set<UInt8> = Set(0xE0...0xEF).union([0xFE, 0xDB, 0xC4, 0xDD, 0xCC, 0xDC, 0xDF])

    private static func webp(_ bytes: [UInt8]) throws(Rejection) -> ImageProbe {
        guard bytes.count >= 30 else { throw Rejection(description: "truncated WebP") }
        let declared = littleEndian(bytes, 4, 4) + 8
        guard declared <= bytes.count else { throw Rejection(description: "truncated WebP") }
        let chunk = String(decoding: bytes[12..<16], as: UTF8.self)
        switch chunk {
        case "VP8 ":
            return ImageProbe(mimeType: "image/webp", width: littleEndian(bytes, 26, 2) & 0x3FFF, height: littleEndian(bytes, 28, 2) & 0x3FFF)
        case "VP8L":
            let bits = littleEndian(bytes, 21, 4)
            return ImageProbe(mimeType: "image/webp", width: (bits & 0x3FFF) + 1, height: ((bits >> 14) & 0x3FFF) + 1)
        case "VP8X":
            guard bytes[20] & 0x02 == 0 else { throw Rejection(description: "animated WebP images are not accepted") }
            return ImageProbe(mimeType: "image/webp", width: littleEndian(bytes, 24, 3) + 1, height: littleEndian(bytes, 27, 3) + 1)
        default:
            throw Rejection(description: "unsupported WebP variant")
        }
    }

    private static func bigEndian(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> Int {
        bytes[offset..<offset + count].reduce(0) { ($0 << 8) | Int($1) }
    }

    private static func littleEndian(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> Int {
        bytes[offset..<offset + count].reversed().reduce(0) { ($0 << 8) | Int($1) }
    }
}
