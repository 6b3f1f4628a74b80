import Foundation

/// Signs webhook deliveries as the Standard Webhooks spec says: `webhook-signature:
/// v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the bytes of `whsec_<base64>`.
public struct WebhookSigner: Sendable {
    private let key: [UInt8]

    /// - Parameter secret: `whsec_` and the base64 key (the prefix may be left out).
    public init?(secret: String) {
        let encoded = secret.hasPrefix("whsec_") ? String(secret.dropFirst("whsec_".count)) : secret
        guard let key = Data(base64Encoded: encoded), key.count >= 16 else { return nil }
        self.key = Array(key)
    }

    private init(key: [UInt8]) {
        self.key = key
    }

    /// The secret in Standard Webhooks' form, for a receiver to verify with.
    public var secret: String { "whsec_" + Data(key).base64EncodedString() }

    /// A signer whose key is HMAC-SHA256 of this one's over `label`.
    func derived(_ label: [UInt8]) -> WebhookSigner {
        WebhookSigner(key: Digest.hmacSHA256(key: key, message: label))
    }

    /// The three headers of one delivery attempt.
    public func headers(id: String, timestamp: Int, body: [UInt8]) -> [(String, String)] {
        [
            ("webhook-id", id),
            ("webhook-timestamp", "\(timestamp)"),
            ("webhook-signature", "v1,\(signature(id: id, timestamp: timestamp, body: body))"),
        ]
    }

    public func signature(id: String, timestamp: Int, body: [UInt8]) -> String {
        let message = Array("\(id).\(timestamp).".utf8) + body
        return Data(Digest.hmacSHA256(key: key, message: message)).base64EncodedString()
    }
}
