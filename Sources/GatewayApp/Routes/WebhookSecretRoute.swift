import Comfy

/// `GET /api/webhook_secret`: the secret the calling key's webhooks are signed with. Each key
/// has its own (`WebhookKeyring`), so one tenant's secret verifies only its own deliveries.
struct WebhookSecretRoute: Sendable {
    let keyring: WebhookKeyring?

    func secret(_ request: GatewayRequest) throws -> GatewayResponse {
        guard let keyring else { throw APIError(.notFound, "this gateway sends no webhooks: WEBHOOK_SECRET is not set") }
        guard let key = request.apiKey else {
            throw APIError(.notFound, "secrets are per API key, and no key is in use here: jobs without one are signed with WEBHOOK_SECRET")
        }
        return .json(.object(["key": .string(key.name), "secret": .string(keyring.signer(forKey: key.name).secret)]))
    }
}
