import Comfy

/// `GET /api/webhook_secret`: the secret the calling key's webhooks are signed with. Each key
/// has its own (derived from `WEBHOOK_SECRET` and its name), so one tenant's secret verifies
/// only its own deliveries.
struct WebhookSecretRoute: Sendable {
    let signer: WebhookSigner?

    func secret(_ request: GatewayRequest) throws -> GatewayResponse {
        guard let signer else { throw APIError(.notFound, "this gateway sends no webhooks: WEBHOOK_SECRET is not set") }
        guard let key = request.apiKey else {
            throw APIError(.notFound, "secrets are per API key, and this gateway has none: webhooks are signed with WEBHOOK_SECRET itself")
        }
        return .json(.object(["key": .string(key.name), "secret": .string(signer.forKey(named: key.name).secret)]))
    }
}
