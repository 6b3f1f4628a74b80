import Comfy

/// Maps `(method, path)` to the handler of the API endpoint, and unknown ones to JSON errors.
struct Router: Sendable {
    typealias Handler = @Sendable (GatewayRequest) async throws -> GatewayResponse

    private var routes: [String: [String: Handler]] = [:]
    /// Paths with a trailing parameter (`/api/result/{id}`), matched by prefix.
    private var prefixRoutes: [(prefix: String, methods: [String: Handler])] = []

    mutating func add(_ method: String, _ path: String, _ handler: @escaping Handler) {
        routes[path, default: [:]][method] = handler
    }

    /// A route for every path below `prefix` (the handler reads the rest of the path).
    mutating func add(_ method: String, prefix: String, _ handler: @escaping Handler) {
        if let index = prefixRoutes.firstIndex(where: { $0.prefix == prefix }) {
            prefixRoutes[index].methods[method] = handler
        } else {
            prefixRoutes.append((prefix, [method: handler]))
        }
    }

    /// Answers the request; every thrown error becomes a JSON error body.
    func respond(to request: GatewayRequest) async -> GatewayResponse {
        let prefixed = prefixRoutes.first { request.path.hasPrefix($0.prefix) && request.path.count > $0.prefix.count }?.methods
        guard let methods = routes[request.path] ?? prefixed else {
            return APIError(.notFound, "no endpoint at \(request.path)").response
        }
        guard let handler = methods[request.method] ?? (request.method == "HEAD" ? methods["GET"] : nil) else {
            var error = APIError(.methodNotAllowed, "\(request.path) does not accept \(request.method)")
            error.headers = [("Allow", methods.keys.sorted().joined(separator: ", "))]
            return error.response
        }
        do {
            return try await handler(request)
        } catch let error as APIError {
            return error.response
        } catch let error as ComfyError {
            return APIError(error).response
        } catch let error as DrawingError {
            return APIError(error).response
        } catch let error as StorageError {
            return APIError(.storageFailed, "storing the image failed: \(error)", details: ["store": .string(error.store)].merging(error.localURL.map { ["local_url": .string($0)] } ?? [:]) { $1 }).response
        } catch {
            return APIError(.internalError, "internal error").response
        }
    }
}
