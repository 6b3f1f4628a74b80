/// An HTTP request as nginx hands it over FastCGI.
struct GatewayRequest: Sendable {
    var method: String
    /// The decoded path without query (`DOCUMENT_URI`).
    var path: String
    var query: String
    /// Header names lower-cased.
    var headers: [String: String]
    var body: [UInt8]
    /// The client's address as nginx saw it (`REMOTE_ADDR`): callers take turns by it.
    var remoteAddress: String = ""
    /// `http` or `https`, as the client reached nginx (`REQUEST_SCHEME`).
    var scheme: String = "http"
    /// The `Host` header with its port, as the client sent it (`CLIENT_HOST`).
    var host: String?

    func header(_ name: String) -> String? { headers[name.lowercased()] }
}
