import Comfy

/// Maps `(method, path)` to the handler of the API endpoint, and unknown ones to JSON errors.
struct Router: Sendable {
    typealias Handler = @Sendable (GatewayRequest) async throws -> GatewayResponse

    /// One method of one path: its handler and the body it takes.
    struct Route: Sendable {
        var handler: Handler
        var body: BodyKind?
        /// Needs an API key once keys are on (`APIKeyGate`).
        var keyed = false
        /// Answered under any `Host` (a load balancer's health check comes by any name), as to a
        /// client that is no operator: a rebinding page could be on an operator's machine.
        var anyHost = false
    }

    private var routes: [String: [String: Route]] = [:]
    /// Paths with a parameter (`/api/result/{id}`, `/api/workflows/{name}/run`), matched by
    /// prefix and suffix; the longest suffix that matches wins.
    private var prefixRoutes: [(prefix: String, suffix: String, methods: [String: Route])] = []
    private let crossOrigin: CrossOriginPolicy
    private let hosts: HostPolicy
    private let gate: APIKeyGate
    private let operatorToken: OperatorToken?

    init(crossOrigin: CrossOriginPolicy, hosts: HostPolicy, gate: APIKeyGate, operatorToken: OperatorToken? = nil) {
        self.crossOrigin = crossOrigin
        self.hosts = hosts
        self.gate = gate
        self.operatorToken = operatorToken
    }

    mutating func add(_ method: String, _ path: String, body: BodyKind? = nil, keyed: Bool = false, anyHost: Bool = false, _ handler: @escaping Handler) {
        routes[path, default: [:]][method] = Route(handler: handler, body: body, keyed: keyed, anyHost: anyHost)
    }

    /// A route for every path below `prefix` that ends with `suffix` (the handler reads the
    /// parameter from the path).
    mutating func add(_ method: String, prefix: String, suffix: String = "", body: BodyKind? = nil, keyed: Bool = false, _ handler: @escaping Handler) {
        let route = Route(handler: handler, body: body, keyed: keyed)
        if let index = prefixRoutes.firstIndex(where: { $0.prefix == prefix && $0.suffix == suffix }) {
            prefixRoutes[index].methods[method] = route
        } else {
            prefixRoutes.append((prefix, suffix, [method: route]))
            prefixRoutes.sort { $0.suffix.count > $1.suffix.count }
        }
    }

    /// Answers the request; every thrown error becomes a JSON error body.
    func respond(to request: GatewayRequest) async -> GatewayResponse {
        // The exact paths first: the prefixed ones are compared one by one.
        let methods = routes[request.path] ?? prefixRoutes.first(where: { route in
            request.path.utf8.count > route.prefix.utf8.count + route.suffix.utf8.count && request.path.hasPrefix(route.prefix) && request.path.hasSuffix(route.suffix)
        })?.methods
        var request = request
        if !hosts.allows(host: request.host) {
            guard methods?.values.contains(where: \.anyHost) == true else { return APIError.unknownHost(request.host).response }
            request.isOperator = false
        }
        if request.isOperator, let operatorToken, !operatorToken.admits(request) { request.isOperator = false }
        guard let methods else {
            return APIError(.notFound, "no endpoint at \(request.path)").response
        }
        if request.method == "OPTIONS" {
            return crossOrigin.preflight(request, methods: Set(methods.keys))
        }
        var response = await answer(request, methods: methods)
        response.headers += crossOrigin.headers(for: request)
        return response
    }

    private func answer(_ request: GatewayRequest, methods: [String: Route]) async -> GatewayResponse {
        guard let route = methods[request.method] ?? (request.method == "HEAD" ? methods["GET"] : nil) else {
            var error = APIError(.methodNotAllowed, "\(request.path) does not accept \(request.method)")
            error.headers = [("Allow", methods.keys.sorted().joined(separator: ", "))]
            return error.response
        }
        if let refusal = crossOrigin.refusal(for: request) {
            return refusal.response
        }
        if let body = route.body, !body.accepts(request.header("content-type")) {
            return APIError(.unsupportedMediaType, "\(request.path) takes a \(body.mediaType) body").response
        }
        do {
            var request = request
            if route.keyed { request.apiKey = try await gate.authenticate(authorization: request.header("authorization")) }
            return try await route.handler(request)
        } catch {
            return apiError(for: error).response
        }
    }
}
