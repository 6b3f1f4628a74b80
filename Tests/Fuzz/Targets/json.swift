// libFuzzer target: the JSON parser (every request body and ComfyUI answer), and the writer
// it feeds: whatever parses must write back to JSON that parses to the same value.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let value = try? JSONValue.parse(bytes) else { return 0 }
    let written = value.encoded()
    guard let again = try? JSONValue.parse(written), again == value else {
        fatalError("written JSON does not read back: \(String(decoding: written, as: UTF8.self))")
    }
    return 0
}
