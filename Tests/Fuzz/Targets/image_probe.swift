// libFuzzer target: the image header probe that checks sketches before ComfyUI sees them,
// and the cut of a multi-picture JPEG to its first picture that comes before it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImageProbe(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let probe = try? ImageProbe.probe(bytes), probe.width <= 0 || probe.height <= 0 {
        fatalError("a probe accepted an image without a size")
    }
    let first = ImageProbe.firstPicture(bytes)
    if first.count > bytes.count { fatalError("the first picture is longer than the image") }
    if let probe = try? ImageProbe.probe(first), probe.width <= 0 || probe.height <= 0 {
        fatalError("a probe accepted a first picture without a size")
    }
    return 0
}
