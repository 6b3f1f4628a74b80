import Comfy

/// `METRICS_TOKEN`: a secret that `/metrics` and `/healthz`'s details need besides an address in
/// `METRICS_ALLOW`, sent as `Authorization: Bearer <token>` (Prometheus' `authorization`). An
/// address alone can be shared: behind a proxy or Docker's userland proxy every client has one.
struct OperatorToken: Sendable {
    static let minimumLength = 16
    private let digest: [UInt8]

    init(_ token: String) {
        digest = Digest.sha256(Array(token.utf8))
    }

    /// Whether the request carries the token. Digests compared in constant time: neither the
    /// length nor the first wrong byte of a guess shows in the answer's timing.
    func admits(_ request: GatewayRequest) -> Bool {
        guard let header = request.header("authorization"), header.utf8.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        let given = Digest.sha256(Array(header.utf8.dropFirst(7)))
        return zip(given, digest).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
