import Comfy

/// What a sketch may be: checked before anything decodes it.
struct SketchLimits: Sendable {
    var maxBytes: Int
    var maxPixels: Int

    /// Checks format, completeness and size; the pixel count comes from the header alone, so a
    /// decompression bomb is refused before any decoder sees it. Returns the image to use (a
    /// multi-picture JPEG's first picture) and what it is.
    func check(_ given: [UInt8]) throws(DrawingError) -> (image: [UInt8], probe: ImageProbe) {
        guard given.count <= maxBytes else { throw DrawingError(.invalidImage, "the sketch is larger than \(maxBytes) bytes") }
        let bytes = ImageProbe.firstPicture(given)
        let probe: ImageProbe
        do {
            probe = try ImageProbe.probe(bytes)
        } catch {
            throw DrawingError(.invalidImage, "the sketch is not a usable image: \(error)")
        }
        guard probe.width > 0, probe.height > 0 else { throw DrawingError(.invalidImage, "the sketch has no pixels") }
        guard let pixels = probe.pixels, pixels <= maxPixels else {
            throw DrawingError(.invalidImage, "the sketch is \(probe.width)×\(probe.height) pixels; at most \(maxPixels) pixels are accepted")
        }
        return (bytes, probe)
    }
}
