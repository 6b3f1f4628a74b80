import CImageCodecs
import Foundation
import NIOPosix

/// Converts a job's images to the format its caller asked for: decoded to RGBA with libpng,
/// libwebp or libjpeg-turbo, encoded again with one of them, on NIO's thread pool (a
/// megapixel takes milliseconds of CPU, which the cooperative pool must not spend).
public enum ImageTranscoder {
    /// Why an image could not be converted.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Larger images are refused before anything decodes them.
    public static let maxPixels = 64 << 20

    /// The image in `format`; as it is when it already is in that format.
    public static func convert(_ image: ImageData, to format: OutputFormat) async throws -> ImageData {
        if image.mimeType == format.mimeType { return image }
        return try await NIOThreadPool.singleton.runIfActive { try convertNow(image, to: format) }
    }

    /// The blocking conversion (tests and benchmarks call it directly).
    public static func convertNow(_ image: ImageData, to format: OutputFormat) throws -> ImageData {
        if image.mimeType == format.mimeType { return image }
        let probe: ImageProbe
        do {
            probe = try ImageProbe.probe(image.bytes)
        } catch {
            throw Failure(description: "the output image cannot be converted: \(error)")
        }
        guard let pixels = probe.pixels, pixels <= maxPixels else { throw Failure(description: "the output image is \(probe.width)×\(probe.height), too large to convert") }
        var rgba: UnsafeMutablePointer<UInt8>?
        var width: Int32 = 0
        var height: Int32 = 0
        let decoded = image.bytes.withUnsafeBufferPointer { buffer -> Int32 in
            switch probe.mimeType {
            case "image/png": cgw_png_decode_rgba(buffer.baseAddress, buffer.count, maxPixels, &rgba, &width, &height)
            case "image/webp": cgw_webp_decode_rgba(buffer.baseAddress, buffer.count, maxPixels, &rgba, &width, &height)
            case "image/jpeg": cgw_jpeg_decode_rgba(buffer.baseAddress, buffer.count, maxPixels, &rgba, &width, &height)
            default: 0
            }
        }
        guard decoded == 1, let rgba else { throw Failure(description: "the output image (\(probe.mimeType)) could not be decoded") }
        defer { free(rgba) }
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        let encoded: Int32 = switch format.kind {
        case .png: cgw_png_encode_rgba(rgba, width, height, &out, &size)
        case .webp: cgw_webp_encode_rgba(rgba, width, height, Float(format.quality), &out, &size)
        case .jpeg: cgw_jpeg_encode_rgba(rgba, width, height, Int32(format.quality), &out, &size)
        }
        guard encoded == 1, let out else { throw Failure(description: "the image could not be encoded as \(format.kind.rawValue)") }
        defer { free(out) }
        return ImageData(bytes: Array(UnsafeBufferPointer(start: out, count: size)), mimeType: format.mimeType)
    }
}
