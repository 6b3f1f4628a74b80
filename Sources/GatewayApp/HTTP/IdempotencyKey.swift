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

    /// What "the same request" means for `endpoint`: its body, byte for byte.
    func requestHash(endpoint: String, body: [UInt8]) -> String {
        Digest.hex(Digest.sha256(Array(endpoint.utf8) + [0] + body))
    }
}
