// libFuzzer target: what a ComfyUI server (or anything posing as one) sends over the
// WebSocket: JSON events and binary frames.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzComfyEvent(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = ComfyEvent.decode(bytes)
    _ = ComfyBinaryFrame.decode(bytes)
    return 0
}
