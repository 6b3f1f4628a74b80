import NIOCore
import NIOHTTP1

extension NIOAsyncChannelOutboundWriter where OutboundOut == HTTPServerResponsePart {
    /// Answers a plain HTTP request on the streaming listener with the API's JSON error, then closes.
    func writeJSONError(_ error: APIError) async throws {
        let body = error.response.body
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "Connection", value: "close")
        for (name, value) in error.headers { headers.add(name: name, value: value) }
        try await write(.head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: error.code.status), headers: headers)))
        try await write(.body(.byteBuffer(ByteBuffer(bytes: body))))
        try await write(.end(nil))
    }
}
