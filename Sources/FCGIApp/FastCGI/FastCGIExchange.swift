import CFastCGI
import Foundation
import GatewayApp
import NIOHTTP1

/// One accepted libfcgi request: its parameters and body in, the response out.
///
/// Only this folder sees the C pointer; the rest of the gateway sees `GatewayRequest`.
struct FastCGIExchange {
    let request: UnsafeMutablePointer<FCGX_Request>

    func readRequest(maxBodyBytes: Int) -> Result<GatewayRequest, APIError> {
        var headers: [String: String] = [:]
        var params: [String: String] = [:]
        var cursor = request.pointee.envp
        while let entry = cursor?.pointee {
            let pair = String(cString: entry)
            if let equals = pair.firstIndex(of: "=") {
                let name = String(pair[..<equals])
                let value = String(pair[pair.index(after: equals)...])
                params[name] = value
                if name.hasPrefix("HTTP_") {
                    headers[name.dropFirst(5).lowercased().replacingOccurrences(of: "_", with: "-")] = value
                }
            }
            cursor = cursor?.advanced(by: 1)
        }
        if let type = params["CONTENT_TYPE"] { headers["content-type"] = type }
        let length = Int(params["CONTENT_LENGTH"] ?? "") ?? 0
        guard length <= maxBodyBytes else {
            return .failure(APIError(.payloadTooLarge, "the request body is larger than \(maxBodyBytes) bytes"))
        }
        var body = [UInt8](repeating: 0, count: length)
        var received = 0
        while received < length {
            let count = body.withUnsafeMutableBytes { buffer in
                FCGX_GetStr(buffer.baseAddress!.advanced(by: received).assumingMemoryBound(to: CChar.self), Int32(length - received), request.pointee.in)
            }
            if count <= 0 { break }
            received += Int(count)
        }
        guard received == length else {
            return .failure(APIError(.invalidRequest, "the request body ended after \(received) of \(length) bytes"))
        }
        return .success(GatewayRequest(
            method: params["REQUEST_METHOD"] ?? "GET",
            path: params["DOCUMENT_URI"] ?? params["SCRIPT_NAME"] ?? "/",
            query: params["QUERY_STRING"] ?? "",
            headers: headers,
            body: body,
            remoteAddress: params["REMOTE_ADDR"] ?? "",
            scheme: params["REQUEST_SCHEME"] ?? (params["HTTPS"] == "on" ? "https" : "http"),
            host: params["CLIENT_HOST"].flatMap { $0.isEmpty ? nil : $0 }
        ))
    }

    func write(_ response: GatewayResponse) {
        var head = "Status: \(response.status) \(HTTPResponseStatus(statusCode: response.status).reasonPhrase)\r\n"
        for (name, value) in response.headers where !value.contains("\r") && !value.contains("\n") {
            head += "\(name): \(value)\r\n"
        }
        head += "Content-Length: \(response.body.count)\r\n\r\n"
        var bytes = Array(head.utf8)
        bytes += response.body
        var offset = 0
        while offset < bytes.count {
            let chunk = min(bytes.count - offset, 1 << 20)
            let written = bytes.withUnsafeBytes { buffer in
                FCGX_PutStr(buffer.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self), Int32(chunk), request.pointee.out)
            }
            if written < 0 { return }  // nginx went away; nothing more to do
            offset += chunk
        }
    }
}
