import Comfy

/// What browsers on other sites may do with the HTTP API (CORS), and the refusal of a
/// state-changing request that another site's page sends without asking.
///
/// A form or `fetch` from any page can POST to the gateway without a preflight when its body
/// is not JSON (multipart to `/api/sketch`); the browser sends `Origin` with it, and that is
/// checked here. JSON bodies need a preflight, which only `CORS_ALLOW_ORIGINS` passes.
struct CrossOriginPolicy: Sendable {
    /// The origins allowed: `SERVER_BASE_URL`'s, `CORS_ALLOW_ORIGINS`, and the page's own on an IP or `localhost`.
    let origins: OriginPolicy

    /// Request headers a cross-origin caller may send.
    static let allowedHeaders = "Content-Type, Authorization, Idempotency-Key"
    /// Response headers a cross-origin caller may read.
    static let exposedHeaders = "Content-Disposition, X-Image-URL, X-Image-URL-Expires, Retry-After, Location, X-Job-Id, Idempotent-Replayed"

    /// Answers an `OPTIONS` request; a CORS preflight passes only for a listed origin and a method the path takes.
    func preflight(_ request: GatewayRequest, methods: Set<String>) -> GatewayResponse {
        let allow = methods.union(methods.contains("GET") ? ["HEAD"] : []).union(["OPTIONS"]).sorted().joined(separator: ", ")
        guard let origin = request.header("origin"), let wanted = request.header("access-control-request-method") else {
            return GatewayResponse(status: 204, headers: [("Allow", allow)])
        }
        guard origins.lists(origin) else {
            return APIError(.forbidden, "cross-origin requests from this origin are not allowed (CORS_ALLOW_ORIGINS)").response
        }
        guard methods.contains(wanted) || (wanted == "HEAD" && methods.contains("GET")) else {
            var error = APIError(.methodNotAllowed, "\(request.path) does not accept \(wanted)")
            error.headers = [("Allow", allow)]
            return error.response
        }
        return GatewayResponse(status: 204, headers: allowOrigin(origin) + [
            ("Access-Control-Allow-Methods", allow),
            ("Access-Control-Allow-Headers", Self.allowedHeaders),
            ("Access-Control-Max-Age", "600"),
        ])
    }

    /// The refusal of a state-changing request from a page that may not use the API, if it is one.
    func refusal(for request: GatewayRequest) -> APIError? {
        guard !["GET", "HEAD", "OPTIONS"].contains(request.method) else { return nil }
        guard let origin = request.header("origin") else {
            // No Origin (an old browser, an extension that strips it): the fetch metadata still tells a page of another site.
            guard let site = request.header("sec-fetch-site"), site == "cross-site" || site == "same-site" else { return nil }
            return origins.allowsAny ? nil : APIError(.forbidden, "requests from pages on other sites are not allowed (CORS_ALLOW_ORIGINS)")
        }
        guard !origins.allows(origin: origin, scheme: request.scheme, host: request.host) else { return nil }
        return APIError(.forbidden, "requests from pages on this origin are not allowed (CORS_ALLOW_ORIGINS, SERVER_BASE_URL)")
    }

    /// The CORS headers of an answer to a listed origin.
    func headers(for request: GatewayRequest) -> [(String, String)] {
        guard let origin = request.header("origin"), origins.lists(origin) else { return [] }
        return allowOrigin(origin) + [("Access-Control-Expose-Headers", Self.exposedHeaders)]
    }

    private func allowOrigin(_ origin: String) -> [(String, String)] {
        [("Access-Control-Allow-Origin", origins.allowsAny ? "*" : origin), ("Vary", "Origin")]
    }
}
