// The multipart target's stand-in for GatewayApp's APIError (the reader throws it), so the
// reader compiles alone, without the rest of the HTTP front.
struct APIError: Error {
    enum Code { case unsupportedMediaType, invalidRequest }
    init(_ code: Code, _ message: String) {}
}
