import Comfy
import Foundation
import Testing

/// The workflow tool document against the rules of Dify's OpenAPI tool parser
/// (`api/core/tools/utils/parser.py`, `ApiBasedToolSchemaParser`, and the call in
/// `custom_tool/tool.py`), then every operation called the way Dify calls it:
/// `servers[0].url + path`, the body as `application/json`.
@Suite(.serialized)
struct DifyToolImportTests {
    @Test func toolDocumentPassesDifysParserRulesAndEachOperationAnswersAtServerPlusPath() async throws {
        try await withGateway("dify-import") { gateway, _ in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            try Sketches.install(Workflows.txt2img(text: "a poster"), as: "poster-v2", in: gateway)
            let response = try await gateway.get("/api/workflows/openapi.json")
            #expect(response.status == 200)
            #expect(response.header("Content-Type") == "application/json")
            let document = try JSONValue.parse(response.body)
            let problems = Self.difyProblems(document)
            #expect(problems.isEmpty, "\(problems)")

            // Dify joins the strings: servers[0].url must be absolute, without a trailing slash.
            let server = try #require(document["servers"]?.arrayValue?.first?["url"]?.stringValue)
            #expect(server == gateway.baseURL)
            let paths = try #require(document["paths"]?.objectValue)
            #expect(Set(paths.keys) == ["/api/workflows/paint/run", "/api/workflows/poster-v2/run"])
            #expect(paths["/api/workflows/poster-v2/run"]?["post"]?["operationId"] == "run_poster_v2")
            for (path, item) in paths.sorted(by: { $0.key < $1.key }) {
                let schema = try #require(item["post"]?["requestBody"]?["content"]?["application/json"]?["schema"])
                var body: [String: JSONValue] = [:]
                for (name, property) in schema["properties"]?.objectValue ?? [:] {
                    if name == "image" {
                        body[name] = .string(Data(Sketches.png(seed: 9)).base64EncodedString())
                    } else if let value = property["default"] {
                        body[name] = value
                    }
                }
                let call = try await gateway.http.execute(CurlRequest(
                    method: "POST", url: server + path, headers: [("Content-Type", "application/json")], body: JSONValue.object(body).encoded()
                ))
                #expect(call.status == 200, "\(path): \(call.bodyText)")
                // Dify reads JSON only: the answer is an object with the image URL.
                #expect(call.header("Content-Type") == "application/json")
                // Absolute: an agent or a chat has no page to resolve a path against.
                let url = try #require(try JSONValue.parse(call.body)["url"]?.stringValue)
                #expect(url.hasPrefix(gateway.baseURL + "/output_images/"), "\(url)")
                #expect(try await gateway.http.execute(CurlRequest(url: url)).status == 200)
            }

            // The full reference has the same absolute server and lists the tools too.
            let full = try JSONValue.parse(try await gateway.get("/openapi.json").body)
            #expect(full["servers"]?.arrayValue?.first?["url"]?.stringValue == gateway.baseURL)
            #expect(full["paths"]?["/api/workflows/paint/run"]?["post"]?["operationId"] == "run_paint")
            #expect(full["paths"]?["/api/generate"] != nil)
        }
    }

    /// What Dify's importer refuses, or imports into a tool that cannot be called.
    static func difyProblems(_ document: JSONValue) -> [String] {
        var problems: [String] = []
        guard document["info"]?.objectValue != nil else { return ["no info object (KeyError 'info')"] }
        guard let paths = document["paths"]?.objectValue else { return ["no paths object"] }
        guard let servers = document["servers"]?.arrayValue, let url = servers.first?["url"]?.stringValue else {
            return ["no servers[0].url (\"No server found in the openapi yaml.\")"]
        }
        if !(url.hasPrefix("http://") || url.hasPrefix("https://")) { problems.append("servers[0].url \(url) is not absolute") }
        if url.hasSuffix("/") { problems.append("servers[0].url ends with / (Dify calls //path)") }
        if url.contains("{") { problems.append("servers[0].url has variables Dify never fills") }
        var operationIDs: Set<String> = []
        var count = 0
        for (path, item) in paths {
            guard let item = item.objectValue else { problems.append("\(path) is not an object"); continue }
            if item["parameters"] != nil { problems.append("\(path) has path-level parameters (ignored by Dify)") }
            for (method, operation) in item {
                guard ["get", "post", "put", "delete", "patch", "head"].contains(method) else {
                    if method != "parameters" { problems.append("\(path) \(method): Dify cannot call this method") }
                    continue
                }
                count += 1
                let id = operation["operationId"]?.stringValue ?? ""
                let idOK = (1...64).contains(id.utf8.count) && id.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x5F || $0 == 0x2D }
                if !idOK { problems.append("\(path) \(method): operationId \"\(id)\" is not ^[a-zA-Z0-9_-]{1,64}$") }
                if !operationIDs.insert(id).inserted { problems.append("operationId \(id) is used twice") }
                for parameter in operation["parameters"]?.arrayValue ?? [] {
                    if parameter["schema"]?["type"]?.stringValue == nil { problems.append("\(path) \(method): parameter without a scalar schema type") }
                }
                guard let requestBody = operation["requestBody"] else { continue }
                let content = requestBody["content"]?.objectValue ?? [:]
                if content.keys.sorted() != ["application/json"] { problems.append("\(path): the body must be exactly application/json, is \(content.keys.sorted())") }
                guard let schema = content["application/json"]?["schema"] else { problems.append("\(path): the body has no schema"); continue }
                if schema["$ref"] != nil || schema["allOf"] != nil || schema["oneOf"] != nil || schema["anyOf"] != nil {
                    problems.append("\(path): the body schema must be an inline object")
                }
                if schema["type"] != "object" { problems.append("\(path): the body schema is not type object") }
                let properties = schema["properties"]?.objectValue ?? [:]
                if properties.isEmpty { problems.append("\(path): the body has no properties (the tool would take no parameters)") }
                for (name, property) in properties {
                    guard let type = property["type"]?.stringValue, ["string", "integer", "number", "boolean"].contains(type) else {
                        problems.append("\(path): \(name) has no single scalar type (a list type crashes the parser; objects become strings)")
                        continue
                    }
                    if property["description"]?.stringValue?.isEmpty != false { problems.append("\(path): \(name) has no description (all the model sees)") }
                    if let value = property["default"], value.objectValue != nil || value.arrayValue != nil { problems.append("\(path): \(name)'s default is not a scalar") }
                }
                for required in schema["required"]?.arrayValue ?? [] where properties[required.stringValue ?? ""] == nil {
                    problems.append("\(path): required names \(required), which is not a property")
                }
            }
        }
        if count > 100 { problems.append("\(count) operations; Dify takes at most 100") }
        return problems
    }
}
