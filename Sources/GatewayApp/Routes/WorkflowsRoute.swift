import Comfy

/// Workflows as typed tools: `GET /api/workflows` (each with its parameters),
/// `GET /api/workflows/{name}` and `POST /api/workflows/{name}/run`, which answers like
/// `/api/generate` (or queues a job like `/api/jobs` with `"async": true`).
struct WorkflowsRoute: Sendable {
    let library: StyleLibrary
    let generate: GenerateRoute
    let jobs: JobsRoute

    func list(_ request: GatewayRequest) async -> GatewayResponse {
        .json(.object(["workflows": .array(await library.tools().map(Self.json))]))
    }

    func show(_ request: GatewayRequest) async throws -> GatewayResponse {
        let name = String(request.path.dropFirst("/api/workflows/".count))
        return .json(Self.json(try await tool(name)))
    }

    func run(_ request: GatewayRequest) async throws -> GatewayResponse {
        // The router sends `/api/workflows/{name}/run` here.
        let tool = try await tool(String(request.path.dropFirst("/api/workflows/".count).dropLast("/run".count)))
        let arguments = try GenerateRequest.object(request.body)
        let call = try tool.call(arguments)
        var body = try GenerateRequest(workflow: call.workflow, outputNodeID: tool.outputNodeID, options: arguments)
        body.inputImages = call.images.map { GenerateRequest.InputImage(field: $0.parameter, given: .text($0.value), targets: $0.targets) }
        body.callerInputs = call.given
        let endpoint = "workflows/\(tool.name)"
        switch arguments["async"] {
        case nil, .null, .bool(false):
            // A tool's caller (an agent, a chat) has no page to resolve `/output_images/...` against.
            return try await generate.generate(body, request, forceFile: body.responseType == .file, endpoint: endpoint, urlBase: request.origin)
        case .bool(true):
            return try await jobs.submit(body, request, endpoint: endpoint)
        default:
            throw APIError(.invalidParameter, "async must be true or false", details: ["parameter": "async"])
        }
    }

    private func tool(_ name: String) async throws -> WorkflowTool {
        guard let tool = await library.tool(name) else {
            let known = await library.tools().map(\.name).joined(separator: ", ")
            throw APIError(.notFound, "no workflow named \"\(name.prefix(64))\"; there are: \(known)")
        }
        return tool
    }

    static func json(_ tool: WorkflowTool) -> JSONValue {
        .object([
            "name": .string(tool.name),
            "run_url": .string("/api/workflows/\(tool.name)/run"),
            "output_node_id": tool.outputNodeID.map(JSONValue.string) ?? .null,
            "parameters": .array(tool.parameters.map { parameter in
                var object: [String: JSONValue] = [
                    "name": .string(parameter.name),
                    "type": .string(parameter.kind.rawValue),
                    "required": .bool(parameter.required),
                    "description": .string(parameter.description),
                ]
                object["default"] = parameter.defaultValue
                object["minimum"] = parameter.minimum.map(JSONValue.number)
                object["maximum"] = parameter.maximum.map(JSONValue.number)
                return .object(object)
            }),
        ])
    }
}
