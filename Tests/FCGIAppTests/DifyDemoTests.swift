import Comfy
import Foundation
import Testing

/// The Dify chatflow demo (dify/dify-chatflow-demo.yml): its HTTP Request node, replayed as Dify
/// would send it, against the real gateway and the emulator.
@Suite(.serialized)
struct DifyDemoTests {
    /// What Tests/Dify/http_node.py prints: the demo's HTTP Request node, body not yet substituted.
    static func demoNode() throws -> JSONValue {
        let directory = try TestPaths.makeTemporaryDirectory("dify-node")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = Pipe()
        let helper = try ChildProcess(
            "/usr/bin/env",
            ["python3", "\(TestPaths.packageRoot)/Tests/Dify/http_node.py", "\(TestPaths.packageRoot)/dify/dify-chatflow-demo.yml"],
            logPath: "\(directory)/http_node.log",
            stdout: output
        )
        // Signal 0 only waits for the exit; the JSON (~2 KB) fits in the pipe's buffer meanwhile.
        let status = helper.stop(0, grace: .seconds(30))
        let text = output.fileHandleForReading.readDataToEndOfFile()
        guard status == 0 else { throw TestFailure("http_node.py exited with \(status):\n\(helper.log)") }
        return try JSONValue.parse(Array(text))
    }

    @Test func demoHTTPNodeWithAChatMessageGetsThePNGOfThatPromptAndItsStoredCopy() async throws {
        let node = try Self.demoNode()
        #expect(node["method"] == "POST")
        #expect(node["body_type"] == "json")
        let headers = try #require(node["headers"]?.arrayValue).compactMap { pair -> (String, String)? in
            guard let items = pair.arrayValue, items.count == 2, let name = items[0].stringValue, let value = items[1].stringValue else { return nil }
            return (name, value)
        }
        #expect(headers.contains { $0.0.lowercased() == "content-type" && $0.1 == "application/json" })
        let demoURLText = try #require(node["url"]?.stringValue)
        let demoURL = try #require(URL(string: demoURLText))
        #expect(demoURL.path == "/api/generate_file")
        let template = try #require(node["body"]?.stringValue)
        #expect(template.contains("{{#sys.query#}}"))

        try await withGateway("dify-demo") { gateway, emulator in
            // Dify replaces {{#sys.query#}} in the JSON text as plain text, then parses it
            // (docs/dify.md); the chat message has no quote or backslash, as the demo requires.
            let query = "a lighthouse on a cliff in a storm, oil painting"
            let substituted = template.replacingOccurrences(of: "{{#sys.query#}}", with: query)
            #expect(!substituted.contains("{{#"), "every Dify variable in the body is substituted")
            var body = try JSONValue.parse(Array(substituted.utf8))
            #expect(body["output_node_id"] == "9")

            // Same path and query as the demo, on the test gateway's scheme, host and port.
            var url = gateway.baseURL + demoURL.path
            if let query = demoURL.query { url += "?" + query }
            let method = try #require(node["method"]?.stringValue)
            func send(_ body: JSONValue) async throws -> CurlResponse {
                try await gateway.http.execute(CurlRequest(method: method, url: url, headers: headers, body: body.encoded(), timeout: .seconds(60)))
            }

            // As shipped, node "4" names the SD1.5 checkpoint of a real ComfyUI, which the emulator
            // (like a ComfyUI without that model) does not have: once the gateway has read the
            // backend's models, it says so itself, with the ones there are (docs/dify.md).
            try await waitUntil {
                try JSONValue.parse(try await gateway.get("/healthz").body)["backends"]?.arrayValue?.first?["models"]?["checkpoints"] != nil
            }
            let asShipped = try await send(body)
            #expect(asShipped.status == 400, "\(asShipped.bodyText)")
            let refusal = try JSONValue.parse(asShipped.body)
            #expect(refusal["error"]?["code"] == "model_not_found")
            #expect(refusal["error"]?["model"] == "v1-5-pruned-emaonly.safetensors")
            #expect(refusal["error"]?["available"] == .array(["emulator.safetensors"]))

            // So the test swaps in the checkpoint the emulator's /object_info lists, as a user
            // picks one of their own models; nothing else in the workflow changes.
            let info = try JSONValue.parse(try await gateway.http.execute(CurlRequest(url: "\(emulator.url)/object_info/CheckpointLoaderSimple")).body)
            let checkpoint = try #require(info["CheckpointLoaderSimple"]?["input"]?["required"]?["ckpt_name"]?.arrayValue?.first?.arrayValue?.first)
            var workflow = try #require(body["workflow_data"]?.objectValue)
            let loaders = workflow.filter { $0.value["class_type"] == "CheckpointLoaderSimple" }
            #expect(loaders.count == 1)
            for (id, loader) in loaders {
                var loader = try #require(loader.objectValue)
                var inputs = try #require(loader["inputs"]?.objectValue)
                #expect(inputs["ckpt_name"] == "v1-5-pruned-emaonly.safetensors")
                inputs["ckpt_name"] = checkpoint
                loader["inputs"] = .object(inputs)
                workflow[id] = .object(loader)
            }
            var fields = try #require(body.objectValue)
            fields["workflow_data"] = .object(workflow)
            body = .object(fields)

            let response = try await send(body)
            #expect(response.status == 200, "\(response.bodyText)")
            // Dify makes an image/* answer the node's `files` output, which the Answer node shows.
            #expect(response.header("Content-Type") == "image/png")
            #expect(response.body.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
            let metadata = try #require(emulatorMetadata(ofPNG: response.body))
            #expect(metadata["texts"]?.arrayValue?.first == .string(query))
            #expect(metadata["node"] == "9")
            let name = Digest.hex(Digest.sha256(response.body)) + ".png"
            #expect(response.header("Content-Disposition") == "attachment; filename=\"\(name)\"")

            let imageURL = try #require(response.header("X-Image-URL"))
            #expect(imageURL == "/output_images/\(name)")
            let stored = try await gateway.get(imageURL)
            #expect(stored.status == 200)
            #expect(stored.header("Content-Type") == "image/png")
            #expect(stored.body == response.body)
        }
    }

    @Test func demoHTTPNodeWaitsAtLeastAsLongAsTheGatewayAndNeverRetries() throws {
        let node = try Self.demoNode()
        let timeout = try #require(node["timeout"]?.objectValue)
        // The gateway gives a generation GENERATE_TIMEOUT (600 s by default) and then answers
        // 504 with JSON; a shorter Dify read timeout would cut a slow generation off first.
        let gatewayGenerateTimeout = 600
        if let read = timeout["read"] {
            #expect((read.intValue ?? 0) >= gatewayGenerateTimeout, "timeout.read \(read)")
        }
        // Dify's editor clamps the node's timeouts to these bounds.
        if let readBound = timeout["max_read_timeout"] {
            #expect((readBound.intValue ?? 0) >= (timeout["read"]?.intValue ?? gatewayGenerateTimeout), "timeout.max_read_timeout \(readBound)")
        }
        if let connect = timeout["connect"], let connectBound = timeout["max_connect_timeout"] {
            #expect((connect.intValue ?? 0) <= (connectBound.intValue ?? 0))
        }
        if let write = timeout["write"], let writeBound = timeout["max_write_timeout"] {
            #expect((write.intValue ?? 0) <= (writeBound.intValue ?? 0))
        }
        // A retry would start a second generation on the GPU for the same chat message.
        let retry = node["retry_config"]
        #expect(retry?["retry_enabled"] != true)
        #expect((retry?["max_retries"]?.intValue ?? 0) == 0)
    }
}
