import Comfy
import Foundation

/// `GET /openapi.json`: the API reference (`static/openapi.json`) with, added at run time, the
/// server's absolute URL and one operation per workflow tool with a flat, typed body.
///
/// `GET /api/workflows/openapi.json` is the workflow tools alone, in the OpenAPI 3.0 shape
/// Dify's "custom tool → import from URL" reads (its parser takes every operation of a document
/// as a tool and fails on 3.1's `type: [..., "null"]`): each workflow one tool, ranges and
/// choices in the descriptions, which are all its model sees.
///
/// Both are public (Dify's import fetch carries no credentials), so while keys are needed a
/// request without a valid one gets the tools without their default values: those are the
/// workflows' own prompts and settings, which are the operator's.
struct OpenAPIRoute: Sendable {
    let base: [String: JSONValue]
    let library: StyleLibrary
    /// `SERVER_BASE_URL`; empty: the request's own scheme and host.
    let serverBaseURL: String
    let gate: APIKeyGate

    /// Reads the reference document; a missing or broken one leaves only the workflow tools.
    init(staticDirectory: String, library: StyleLibrary, serverBaseURL: String, gate: APIKeyGate) {
        let data = FileManager.default.contents(atPath: "\(staticDirectory)/openapi.json").map { Array($0) } ?? []
        base = (try? JSONValue.parse(data))?.objectValue ?? [
            "openapi": "3.1.0", "info": .object(["title": "Comfy Gateway", "version": "1"]), "paths": .object([:]),
        ]
        self.library = library
        self.serverBaseURL = serverBaseURL
        self.gate = gate
    }

    func document(_ request: GatewayRequest) async -> GatewayResponse {
        var document = base
        document["servers"] = .array([.object(["url": .string(serverURL(for: request))])])
        document["paths"] = .object((document["paths"]?.objectValue ?? [:]).merging(await toolPaths(request)) { $1 })
        return .json(.object(document), headers: [("Vary", "Host, Authorization")])
    }

    func toolDocument(_ request: GatewayRequest) async -> GatewayResponse {
        let paths = await toolPaths(request)
        let document: JSONValue = .object([
            "openapi": "3.0.3",
            "info": .object([
                "title": "Comfy Gateway workflows",
                "version": .string(base["info"]?["version"]?.stringValue ?? "1"),
                "description": "Every ComfyUI workflow of this gateway as a tool. Authenticate with an API key: Authorization: Bearer cgw_...",
            ]),
            "servers": .array([.object(["url": .string(serverURL(for: request))])]),
            "paths": .object(paths),
            "components": .object(["securitySchemes": .object(["bearer": .object(["type": "http", "scheme": "bearer"])])]),
            "security": .array([.object(["bearer": .array([])])]),
        ])
        return .json(document, headers: [("Vary", "Host, Authorization")])
    }

    /// One path per workflow tool, `/api/workflows/{name}/run`.
    private func toolPaths(_ request: GatewayRequest) async -> [String: JSONValue] {
        // Without keys there is nothing to withhold; with them, a request that is not the gate's is refused defaults.
        let withDefaults: Bool
        do {
            _ = try await gate.authenticate(authorization: request.header("authorization"))
            withDefaults = true
        } catch {
            withDefaults = false
        }
        var paths: [String: JSONValue] = [:]
        let tools = await library.tools()
        let ids = Self.operationIDs(tools.map(\.name))
        for tool in tools {
            paths["/api/workflows/\(tool.name)/run"] = .object(["post": Self.operation(tool, id: ids[tool.name] ?? Self.operationID(tool.name), withDefaults: withDefaults)])
        }
        return paths
    }

    /// The absolute base URL callers reach: Dify joins `servers[0].url` and the path as strings.
    func serverURL(for request: GatewayRequest) -> String {
        var base = serverBaseURL.isEmpty ? request.origin : serverBaseURL
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }

    /// One tool as one operation: `run_<name>`, its parameters as the body's properties (with
    /// their default values when `withDefaults`).
    static func operation(_ tool: WorkflowTool, id: String, withDefaults: Bool = true) -> JSONValue {
        var properties: [String: JSONValue] = [:]
        for parameter in tool.parameters {
            var description = parameter.description
            switch (parameter.minimum, parameter.maximum) {
            case let (low?, high?): description += " From \(WorkflowTool.format(low)) to \(WorkflowTool.format(high))."
            case let (low?, nil): description += " At least \(WorkflowTool.format(low))."
            case let (nil, high?): description += " At most \(WorkflowTool.format(high))."
            case (nil, nil): break
            }
            var schema: [String: JSONValue] = [
                "type": .string(parameter.kind == .image ? "string" : parameter.kind.rawValue),
                "description": .string(description),
            ]
            // Dify's importer takes a number, a string or a boolean as a default; a list fails the whole import.
            if withDefaults, let value = parameter.defaultValue, value.stringValue != nil || value.doubleValue != nil || value.boolValue != nil {
                schema["default"] = value
            }
            schema["minimum"] = parameter.minimum.map(JSONValue.number)
            schema["maximum"] = parameter.maximum.map(JSONValue.number)
            properties[parameter.name] = .object(schema)
        }
        properties["response_type"] = .object([
            "type": "string", "enum": .array(["url", "file"]), "default": "url",
            "description": "url (the default): a JSON answer with the image URL; file: the image bytes.",
        ])
        properties["output_format"] = .object([
            "type": "string", "enum": .array(["png", "webp", "jpeg"]), "default": "png",
            "description": "The image format: png (the default), webp or jpeg.",
        ])
        properties["quality"] = .object([
            "type": "integer", "minimum": 1, "maximum": 100, "default": .number(Double(OutputFormat.defaultQuality)),
            "description": "webp and jpeg quality, from 1 to 100.",
        ])
        var body: [String: JSONValue] = ["type": "object", "properties": .object(properties)]
        let required = tool.parameters.filter(\.required).map { JSONValue.string($0.name) }
        if !required.isEmpty { body["required"] = .array(required) }
        let names = tool.parameters.map(\.name).joined(separator: ", ")
        return .object([
            "operationId": .string(id),
            "tags": .array(["workflows"]),
            "summary": .string("Run the \(tool.name) workflow"),
            "description": .string("Runs the \(tool.name) ComfyUI workflow and answers with its image\(names.isEmpty ? "." : "; parameters: \(names).")"),
            "requestBody": .object(["required": true, "content": .object(["application/json": .object(["schema": .object(body)])])]),
            "responses": .object([
                "200": .object([
                    "description": "The image's URL (with response_type file: the image bytes instead).",
                    "content": .object([
                        "application/json": .object(["schema": .object([
                            "type": "object",
                            "properties": .object([
                                "url": .object(["type": "string", "description": "Where the image is."]),
                                "filename": .object(["type": "string"]),
                                "content_type": .object(["type": "string"]),
                            ]),
                        ])]),
                    ]),
                ]),
                "400": .object(["description": "A parameter is unknown, of the wrong type or out of range (error.parameter names it)."]),
                "default": .object(["description": "Any other error, as JSON: error.code and error.message say what went wrong."]),
            ]),
        ])
    }

    /// `run_` and the name with `-` as `_`: an identifier in every tool-calling format.
    static func operationID(_ name: String) -> String {
        "run_" + name.replacingOccurrences(of: "-", with: "_")
    }

    /// Each tool's `operationId`, unique and at most 64 characters (Dify's and the model APIs'
    /// limit): `run_<name>`, or, where that is too long or another name's too (`a-b` and
    /// `a_b`), a prefix of it and 8 hex digits of the name's SHA-256.
    static func operationIDs(_ names: [String]) -> [String: String] {
        let plain = Dictionary(grouping: names, by: operationID)
        var ids: [String: String] = [:]
        for name in names {
            let id = operationID(name)
            // A name without `-` is its own id's only owner among names without one.
            let shared = (plain[id]?.count ?? 0) > 1 && name.contains("-")
            guard id.utf8.count > 64 || shared else {
                ids[name] = id
                continue
            }
            ids[name] = String(id.prefix(55)) + "_" + String(Digest.hex(Digest.sha256(Array(name.utf8))).prefix(8))
        }
        return ids
    }
}
