// libFuzzer target: the image header probe that checks sketches before ComfyUI sees them.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImageProbe(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let probe = try? ImageProbe.probe(bytes), probe.width <= 0 || probe.height <= 0 {
        fatalError("a probe accepted an image without a size")
    }
    return 0
}
