import Comfy

/// The `Idempotency-Key` header: the same key with the same request within 24 h is the same
/// job; the same key with another request is refused (422).
struct IdempotencyKey: Sendable {
    static let maxLength = 255

    let value: String

    /// The request's key, if it sent one; 400 for an empty, long or non-printable one.
    static func of(_ request: GatewayRequest) throws(APIError) -> IdempotencyKey? {
        guard let value = request.header("idempotency-key") else { return nil }
        guard !value.isEmpty, value.utf8.count <= maxLength, value.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
            throw APIError(.invalidRequest, "Idempotency-Key must be 1 to \(maxLength) printable ASCII characters without spaces")
        }
        return IdempotencyKey(value: value)
    }

    /// What "the same request" means for `endpoint`: a JSON body byte for byte; a form's fields
    /// and files, whatever boundary the client picked (curl, requests and Dify pick a new one
    /// for each call, retries too) and in whatever order it sent them.
    func requestHash(endpoint: String, body: [UInt8], contentType: String?) -> String {
        var canonical = Array(endpoint.utf8) + [0]
        // A form that reached this point was read already: it parses again.
        if BodyKind.multipart.accepts(contentType), let form = try? MultipartForm(body: body, contentType: contentType) {
            // A JSON body has no NUL byte: these bytes are never a body's.
            canonical += [0] + Array("form".utf8) + [0]
            // Each value length-first, so that no two forms run together into the same bytes.
            func append(_ bytes: [UInt8]) { canonical += Array(String(bytes.count).utf8) + [0] + bytes }
            for part in form.parts.sorted(by: { $0.name < $1.name }) {
                append(Array(part.name.utf8))
                append(Array((part.filename ?? "").utf8) + [part.filename == nil ? 0 : 1])
                append(Array((part.contentType ?? "").utf8))
                append(part.body)
            }
        } else {
            // As before forms were told apart: keys stored by an earlier version still match.
            canonical += body
        }
        return Digest.hex(Digest.sha256(canonical))
    }
}
