import CFastCGI
import Foundation
import GatewayApp
import NIOHTTP1

/// One accepted libfcgi request: its parameters and body in, the response out.
///
/// Only this folder sees the C pointer; the rest of the gateway sees `GatewayRequest`.
struct FastCGIExchange {
    let request: UnsafeMutablePointer<FCGX_Request>

    /// The FastCGI parameters the gateway reads besides the `HTTP_*` headers.
    private struct Parameters {
        var method, path, scriptName, query, contentType, contentLength, remoteAddress, scheme, https, clientHost, operatorClient: String?

        static let names: [(StaticString, any WritableKeyPath<Parameters, String?> & Sendable)] = [
            ("REQUEST_METHOD", \.method), ("DOCUMENT_URI", \.path), ("SCRIPT_NAME", \.scriptName), ("QUERY_STRING", \.query),
            ("CONTENT_TYPE", \.contentType), ("CONTENT_LENGTH", \.contentLength), ("REMOTE_ADDR", \.remoteAddress),
            ("REQUEST_SCHEME", \.scheme), ("HTTPS", \.https), ("CLIENT_HOST", \.clientHost), ("OPERATOR_CLIENT", \.operatorClient),
        ]
    }

    func readRequest(maxBodyBytes: Int) -> Result<GatewayRequest, APIError> {
        var headers: [String: String] = [:]
        headers.reserveCapacity(16)
        var parameters = Parameters()
        // Parsed as bytes, straight from libfcgi's `NAME=value` C strings: this runs for every
        // request, and Foundation string searching here cost a fifth of the app's CPU (perf).
        var cursor = request.pointee.envp
        while let entry = cursor?.pointee {
            cursor = cursor?.advanced(by: 1)
            let pair = UnsafeRawBufferPointer(start: entry, count: strlen(entry))
            guard let equals = pair.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let value = pair[(equals + 1)...]
            if equals > 5, pair.starts(with: "HTTP_".utf8) {
                let name = String(unsafeUninitializedCapacity: equals - 5) { buffer in
                    for (index, byte) in pair[5..<equals].enumerated() {
                        // HTTP_X_FORWARDED_FOR → x-forwarded-for
                        buffer[index] = byte == UInt8(ascii: "_") ? UInt8(ascii: "-") : (byte >= 65 && byte <= 90 ? byte + 32 : byte)
                    }
                    return equals - 5
                }
                headers[name] = String(decoding: value, as: UTF8.self)
                continue
            }
            // Names compared as bytes, length first: most of nginx's twenty parameters are none
            // of these, and a String made and compared per parameter was most of this loop (perf).
            for (name, field) in Parameters.names
            where equals == name.utf8CodeUnitCount && memcmp(entry, name.utf8Start, equals) == 0 {
                parameters[keyPath: field] = String(decoding: value, as: UTF8.self)
                break
            }
        }
        if let contentType = parameters.contentType, !contentType.isEmpty { headers["content-type"] = contentType }
        let length = Int(parameters.contentLength ?? "") ?? 0
        // nginx sends none below 0; a direct FastCGI peer (a TCP listener) might.
        guard length >= 0 else { return .failure(APIError(.invalidRequest, "CONTENT_LENGTH is negative")) }
        guard length <= maxBodyBytes else {
            return .failure(APIError(.payloadTooLarge, "the request body is larger than \(maxBodyBytes) bytes"))
        }
        var body = [UInt8](repeating: 0, count: length)
        var received = 0
        while received < length {
            let count = body.withUnsafeMutableBytes { buffer in
                // libfcgi takes an Int32 count: a body over 2 GiB (MAX_BODY_BYTES allows it) is read in parts.
                FCGX_GetStr(buffer.baseAddress!.advanced(by: received).assumingMemoryBound(to: CChar.self), Int32(min(length - received, 1 << 30)), request.pointee.in)
            }
            if count <= 0 { break }
            received += Int(count)
        }
        guard received == length else {
            return .failure(APIError(.invalidRequest, "the request body ended after \(received) of \(length) bytes"))
        }
        return .success(GatewayRequest(
            method: parameters.method ?? "GET",
            path: parameters.path ?? parameters.scriptName ?? "/",
            query: parameters.query ?? "",
            headers: headers,
            body: body,
            remoteAddress: parameters.remoteAddress ?? "",
            scheme: parameters.scheme ?? (parameters.https == "on" ? "https" : "http"),
            host: parameters.clientHost.flatMap { $0.isEmpty ? nil : $0 },
            isOperator: parameters.operatorClient == "1"
        ))
    }

    func write(_ response: GatewayResponse) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(256 + response.body.count)
        func line(_ text: String) {
            bytes += text.utf8
            bytes += [13, 10]
        }
        line("Status: \(response.status) \(HTTPResponseStatus(statusCode: response.status).reasonPhrase)")
        for (name, value) in response.headers where !value.utf8.contains(13) && !value.utf8.contains(10) {
            line("\(name): \(value)")
        }
        line("Content-Length: \(response.body.count)")
        bytes += [13, 10]
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
