/// Who signs a job's webhook: the gateway's own secret (`WEBHOOK_SECRET`) for a job without an
/// API key, and each key's own secret for its jobs. A key's secret is derived from
/// `WEBHOOK_SECRET`, a random root the gateway keeps to itself, and the key's name (never
/// reused): one key's secret, or `WEBHOOK_SECRET` (which tenants may have been given before
/// keys had their own), gives no other key's.
public struct WebhookKeyring: Sendable {
    /// For jobs without an API key.
    public let gateway: WebhookSigner
    private let keys: WebhookSigner

    /// - Parameter root: random bytes kept in the store or `STATE_DIR`, never handed out.
    public init(gateway: WebhookSigner, root: [UInt8]) {
        self.gateway = gateway
        keys = gateway.derived(Array("comfy-gateway webhook keys ".utf8) + root)
    }

    public func signer(forKey name: String) -> WebhookSigner {
        keys.derived(Array("API key \(name)".utf8))
    }

    public func signer(for record: JobRecord) -> WebhookSigner {
        record.keyName.map(signer(forKey:)) ?? gateway
    }
}
