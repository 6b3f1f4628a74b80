// libFuzzer target: the multipart/form-data reader of /api/sketch. The first byte picks the
// boundary's length, the rest is the body.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMultipart(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let boundary = String(repeating: "b", count: Int(data[0] % 72) + 1)
    let body = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if let form = try? MultipartForm(body: body, contentType: "multipart/form-data; boundary=\(boundary)") {
        for part in form.parts where part.body.count > body.count { fatalError("a part is larger than the body") }
    }
    return 0
}
