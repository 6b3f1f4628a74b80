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

    /// The signer of one API key's deliveries: its own secret, derived from this one and the
    /// key's name (names are never reused), so that a tenant who can verify its webhooks cannot
    /// sign one that another tenant's receiver would take.
    public func forKey(named name: String) -> WebhookSigner {
        WebhookSigner(key: Digest.hmacSHA256(key: key, message: Array("comfy-gateway webhook secret of API key \(name)".utf8)))
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
