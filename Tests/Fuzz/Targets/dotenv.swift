// libFuzzer target: the .env reader (it reads whatever a user's editor saved).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDotEnv(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? DotEnv.parse(text, environment: ["HOME": "/home/x"])
    return 0
}
