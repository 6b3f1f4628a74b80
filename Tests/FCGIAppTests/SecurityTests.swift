import Comfy
import Foundation
import Testing

/// The front door's guards, through nginx: file names and node classes ComfyUI must never see,
/// no server path in what ComfyUI says, JSON-only job routes, CORS, and drawing-socket origins.
@Suite(.serialized)
struct SecurityTests {
    func error(of response: CurlResponse) throws -> JSONValue {
        #expect(response.header("Content-Type")?.hasPrefix("application/json") == true)
        return try #require(try JSONValue.parse(response.body)["error"])
    }

    /// A workflow that loads `name` with `loader` and sends the result over the WebSocket.
    func loading(_ name: String, with loader: String = "LoadImage", input: String = "image") -> JSONValue {
        loading(value: .string(name), with: loader, input: input)
    }

    func loading(value: JSONValue, with loader: String = "LoadImage", input: String = "image") -> JSONValue {
        Workflows.body([
            "10": Workflows.node(loader, [input: value]),
            "11": Workflows.node("ImageInvert", ["image": Workflows.link("10", 0)]),
            "12": Workflows.node("SaveImageWebsocket", ["images": Workflows.link("11", 0)]),
        ], output: "12")
    }

    @Test func fileNamesOutsideTheGatewaysFoldersAreRefusedBeforeComfyUISeesThem() async throws {
        try await withGateway("sec-files") { gateway, emulator in
            let cases: [(body: JSONValue, node: String, input: String, mentions: String)] = [
                (loading("/etc/passwd"), "10", "image", "absolute"),
                (loading("../../../../etc/hostname"), "10", "image", ".."),
                (loading("clipspace/secret.png"), "10", "image", "folder"),
                (loading("ComfyUI_00001_.png [output]"), "10", "image", "output"),
                (loading("ComfyUI_00001_.pngX[output]"), "10", "image", "output"),
                (loading(value: .object(["__value__": "/etc/hostname"])), "10", "image", "absolute"),
                (loading(value: Workflows.link("99", 0)), "10", "image", "computed"),
                (loading("../mask.png", with: "LoadImageMask"), "10", "image", ".."),
                (loading("gateway/session-\(UUID().uuidString.lowercased()).png"), "10", "image", "gave your input images"),
                (loading("/dev/zero", with: "LoadLatent", input: "latent"), "10", "latent", "absolute"),
                (loading("/srv/clips/a.mp4", with: "VHS_LoadVideo", input: "video"), "10", "video", "absolute"),
                (Workflows.body({
                    var workflow = Workflows.txt2img(text: "x")
                    workflow["4"] = Workflows.node("CheckpointLoaderSimple", ["ckpt_name": "../../../../etc/passwd"])
                    return workflow
                }()), "4", "ckpt_name", ".."),
                (Workflows.body({
                    var workflow = Workflows.txt2img(text: "x")
                    workflow["4"] = Workflows.node("CheckpointLoaderSimple", ["ckpt_name": "/etc/passwd"])
                    return workflow
                }()), "4", "ckpt_name", "absolute"),
            ]
            for testCase in cases {
                for path in ["/api/generate", "/api/generate_file"] {
                    let response = try await gateway.post(path, json: testCase.body)
                    #expect(response.status == 400, "\(path) \(response.bodyText)")
                    let error = try error(of: response)
                    #expect(error["code"] == "workflow_refused", "\(response.bodyText)")
                    #expect(error["node_id"] == .string(testCase.node))
                    #expect(error["input"] == .string(testCase.input))
                    #expect(error["message"]?.stringValue?.contains(testCase.mentions) == true, "\(response.bodyText)")
                }
            }
            #expect(try await emulator.stats()["prompts_received"] == 0)
            // A name of the form the gateway hands out does reach ComfyUI (which finds no such file).
            let own = try await gateway.post("/api/generate", json: loading("gateway/\(String(repeating: "0", count: 64)).png"))
            #expect(own.status == 400)
            #expect(try error(of: own)["code"] == "workflow_invalid")
            #expect(try await emulator.stats()["prompts_received"] == 1)
        }
    }

    @Test func deniedNodeClassesAreRefusedAndAnAllowListRunsOnlyItsClasses() async throws {
        try await withGateway("sec-deny", environment: ["NODE_DENY": "ImageBlur"]) { gateway, emulator in
            for denied in ["Image Save", "Evaluate Integers", "CheckpointSave", "ImageBlur"] {
                var workflow = Workflows.txt2img(text: "x")
                workflow["20"] = Workflows.node(denied, ["images": Workflows.link("8", 0)])
                let response = try await gateway.post("/api/generate", json: Workflows.body(workflow))
                #expect(response.status == 400, "\(denied)")
                let error = try error(of: response)
                #expect(error["code"] == "workflow_refused")
                #expect(error["node_id"] == "20")
                #expect(error["class_type"] == .string(denied))
            }
            #expect(try await emulator.stats()["prompts_received"] == 0)
            #expect(try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "ok"))).status == 200)
        }
        let txt2imgClasses = "KSampler,CheckpointLoaderSimple,EmptyLatentImage,CLIPTextEncode,VAEDecode,SaveImageWebsocket"
        try await withGateway("sec-allow", environment: ["NODE_POLICY": "allow", "NODE_ALLOW": txt2imgClasses]) { gateway, emulator in
            let allowed = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "allowed")))
            #expect(allowed.status == 200)
            #expect(emulatorMetadata(ofPNG: allowed.body)?["texts"] == .array(["allowed", "text, watermark"]))
            var workflow = Workflows.txt2img(text: "x")
            workflow["9"] = Workflows.node("SaveImage", ["images": Workflows.link("8", 0), "filename_prefix": "gw"])
            let refused = try await gateway.post("/api/generate", json: Workflows.body(workflow))
            #expect(refused.status == 400)
            let error = try error(of: refused)
            #expect(error["code"] == "workflow_refused")
            #expect(error["node_id"] == "9")
            #expect(error["message"]?.stringValue?.contains("NODE_ALLOW") == true)
            #expect(try await emulator.stats()["prompts_received"] == 1)
            // A style runs for anonymous painters: one with classes outside the list is left out.
            try Sketches.install(Sketches.style(), as: "outside", in: gateway)
            #expect(try JSONValue.parse(try await gateway.get("/api/styles").body)["styles"] == .array([]))
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            let broken = health["styles"]?["broken"]?.arrayValue?.first
            #expect(broken?["file"] == "outside.json", "\(health)")
            #expect(broken?["reason"]?.stringValue?.contains("node policy") == true, "\(health)")
        }
    }

    @Test func comfyErrorsPassedOnCarryNoServerPath() async throws {
        try await withGateway("sec-paths") { gateway, emulator in
            let input = "\(emulator.directory)/comfy/input"
            try FileManager.default.createDirectory(atPath: input, withIntermediateDirectories: true)
            try Data("not an image".utf8).write(to: URL(fileURLWithPath: "\(input)/notimage.png"))
            // A run-time failure: ComfyUI's message names the file by its absolute path.
            let failed = try await gateway.post("/api/generate", json: loading("notimage.png"))
            #expect(failed.status == 502)
            let failure = try error(of: failed)
            #expect(failure["code"] == "execution_failed")
            #expect(failure["message"]?.stringValue?.contains("'notimage.png'") == true, "\(failed.bodyText)")
            // A validation failure that carries a Python traceback (a link to a node that is not there).
            var workflow = Workflows.txt2img(text: "x")
            workflow["9"] = Workflows.node("SaveImageWebsocket", ["images": Workflows.link("99", 0)])
            let invalid = try await gateway.post("/api/generate", json: Workflows.body(workflow))
            #expect(invalid.status == 400)
            #expect(try JSONValue.parse(invalid.body)["node_errors"]?["9"]?["errors"]?.arrayValue?.first?["type"] == "exception_during_validation")
            for response in [failed, invalid] {
                for leak in [emulator.directory, TestPaths.packageRoot, "comfyui_emulator.py", "traceback", "/tmp/"] {
                    #expect(!response.bodyText.contains(leak), "\(leak) in \(response.bodyText)")
                }
            }
        }
    }

    @Test func jobRoutesTakeOnlyJSONOrFormsWithFilesAndSketchesOnlyMultipart() async throws {
        try await withGateway("sec-types") { gateway, emulator in
            let body = Workflows.body(Workflows.txt2img(text: "x")).encoded()
            for type in ["text/plain", "application/x-www-form-urlencoded", "application/xml", "", "application/jsonp"] {
                for path in ["/api/generate", "/api/generate_file"] {
                    let response = try await gateway.post(path, body: body, contentType: type)
                    #expect(response.status == 415, "\(path) with \(type)")
                    #expect(try error(of: response)["code"] == "unsupported_media_type")
                }
            }
            // A form must be a well-formed one; JSON sent as a form is not.
            let notAForm = try await gateway.post("/api/generate", body: body, contentType: "multipart/form-data; boundary=x")
            #expect(notAForm.status == 400)
            let sketch = try await gateway.post("/api/sketch", body: Array("{}".utf8), contentType: "application/json")
            #expect(sketch.status == 415)
            #expect(try await emulator.stats()["prompts_received"] == 0)
            let json = try await gateway.post("/api/generate", body: body, contentType: "application/json; charset=utf-8")
            #expect(json.status == 200)
        }
    }

    @Test func crossSitePagesNeedCORSAndPreflightsAnswerForListedOriginsOnly() async throws {
        let preflight = { (gateway: Gateway, origin: String) in
            try await gateway.http.execute(CurlRequest(method: "OPTIONS", url: gateway.baseURL + "/api/generate", headers: [
                ("Origin", origin), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "content-type"),
            ]))
        }
        let body = Workflows.body(Workflows.txt2img(text: "x")).encoded()
        let post = { (gateway: Gateway, origin: String) in
            try await gateway.http.execute(CurlRequest(method: "POST", url: gateway.baseURL + "/api/generate", headers: [
                ("Origin", origin), ("Content-Type", "application/json"),
            ], body: body))
        }
        try await withGateway("sec-cors-off") { gateway, emulator in
            let refused = try await preflight(gateway, "https://app.example")
            #expect(refused.status == 403)
            #expect(refused.header("Access-Control-Allow-Origin") == nil)
            let foreign = try await post(gateway, "https://evil.example")
            #expect(foreign.status == 403)
            #expect(try error(of: foreign)["code"] == "forbidden")
            // A form post needs no preflight: the Origin the browser sends is checked instead.
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": "csrf"])
            let sketch = try await gateway.http.execute(CurlRequest(method: "POST", url: gateway.baseURL + "/api/sketch", headers: [
                ("Origin", "https://evil.example"), ("Content-Type", form.contentType),
            ], body: form.body))
            #expect(sketch.status == 403)
            #expect(try await emulator.stats()["prompts_received"] == 0)
            // The gateway's own page may.
            let own = try await post(gateway, gateway.baseURL)
            #expect(own.status == 200, "\(own.bodyText)")
            #expect(own.header("Access-Control-Allow-Origin") == nil)
        }
        try await withGateway("sec-cors-on", environment: ["CORS_ALLOW_ORIGINS": "https://app.example"]) { gateway, _ in
            let passed = try await preflight(gateway, "https://app.example")
            #expect(passed.status == 204)
            #expect(passed.header("Access-Control-Allow-Origin") == "https://app.example")
            #expect(passed.header("Access-Control-Allow-Methods")?.contains("POST") == true)
            #expect(passed.header("Access-Control-Allow-Headers")?.lowercased().contains("content-type") == true)
            #expect(passed.header("Vary") == "Origin")
            #expect(try await preflight(gateway, "https://other.example").status == 403)
            #expect(try await preflight(gateway, "http://app.example").status == 403)
            let answered = try await post(gateway, "https://app.example")
            #expect(answered.status == 200)
            #expect(answered.header("Access-Control-Allow-Origin") == "https://app.example")
            #expect(answered.header("Access-Control-Expose-Headers")?.contains("X-Image-URL") == true)
            #expect(try await post(gateway, "https://other.example").status == 403)
        }
    }

    @Test func callersURLsNeverReachTheGatewaysOwnComfyUIEvenWhereLocalAddressesAreAllowed() async throws {
        let environment = ["INPUT_URL_ALLOW_PRIVATE": "true", "WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_SECRET": WebhookReceiver.secret]
        try await withGateway("sec-own-backend", environment: environment) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            let port = emulator.port
            // Another caller's image, read as the trusted client; a global interrupt as a webhook.
            for target in [
                "\(emulator.url)/view?filename=ComfyUI_00001_.png&type=output", "http://127.0.0.2:\(port)/view?filename=a.png&type=output",
                "http://localhost:\(port)/view?filename=a.png", "http://[::ffff:127.0.0.1]:\(port)/view?filename=a.png",
            ] {
                let response = try await gateway.post("/api/workflows/paint/run", json: .object(["image": .string(target)]))
                #expect(response.status == 400, "\(target): \(response.bodyText)")
                #expect(try JSONValue.parse(response.body)["error"]?["parameter"] == "image")
                #expect(response.bodyText.contains("never its own ComfyUI servers"))
            }
            let hook = try await gateway.post(
                "/api/jobs", json: .object(["workflow_data": .object(Workflows.txt2img(text: "x")), "webhook_url": .string("\(emulator.url)/interrupt")])
            )
            #expect(hook.status == 400, "\(hook.bodyText)")
            #expect(try await emulator.stats()["prompts_received"] == 0)
            #expect(try await emulator.stats()["interrupts"]?.arrayValue?.isEmpty == true)
        }
    }

    @Test func theAPIAnswersOnlyUnderAddressesLocalhostAndConfiguredNames() async throws {
        // DNS rebinding: a same-origin GET from a page at evil.example carries no Origin, only its Host.
        try await withGateway("sec-hosts", environment: ["ALLOWED_HOSTS": "gateway,.corp.example"]) { gateway, _ in
            let job = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "private")))
            let id = try #require(try JSONValue.parse(job.body)["id"]?.stringValue)
            for host in ["evil.example:\(gateway.port)", "evil.example", "gateway.evil.example"] {
                // The event stream too, which the streaming listener answers, not the router.
                for path in ["/api/jobs/\(id)", "/api/jobs/\(id)/events"] {
                    let refused = try await gateway.get(path, headers: [("Host", host)])
                    #expect(refused.status == 421, "\(host) \(path)")
                    #expect(try JSONValue.parse(refused.body)["error"]?["code"] == "unknown_host")
                    #expect(!refused.bodyText.contains("private"))
                }
            }
            for host in ["127.0.0.1:\(gateway.port)", "localhost:\(gateway.port)", "gateway:\(gateway.port)", "gpu.corp.example"] {
                #expect(try await gateway.get("/api/jobs/\(id)", headers: [("Host", host)]).status == 200, "\(host)")
                #expect(try await gateway.get("/api/jobs/\(id)/events", headers: [("Host", host)]).status == 200, "\(host)")
            }
        }
        let directory = try TestPaths.makeTemporaryDirectory("sec-hosts-bad")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let app = try appRefusal(in: directory, ["ALLOWED_HOSTS": "gateway,evil.example/x"])
        #expect(app.status == 78)
        #expect(app.log.hasPrefix("invalid configuration: ALLOWED_HOSTS: \"evil.example/x\" is not a host name"), "\(app.log)")
    }

    @Test func drawingSocketOriginsMustMatchSchemeHostAndPort() async throws {
        try await withGateway("sec-ws-default") { gateway, _ in
            let port = gateway.port
            let cases: [(origin: String?, host: String, status: Int)] = [
                ("http://127.0.0.1:\(port)", "127.0.0.1:\(port)", 101),
                ("http://localhost:\(port)", "localhost:\(port)", 101),
                (nil, "127.0.0.1:\(port)", 101),
                ("http://127.0.0.1:9999", "127.0.0.1:\(port)", 403),
                ("https://127.0.0.1:\(port)", "127.0.0.1:\(port)", 403),
                ("http://evil.example:\(port)", "evil.example:\(port)", 403),
                ("http://evil.example", "evil.example", 403),
                ("null", "127.0.0.1:\(port)", 403),
            ]
            for testCase in cases {
                let headers = [("Host", testCase.host)] + (testCase.origin.map { [("Origin", $0)] } ?? [])
                let status = try upgradeStatus(port: port, path: "/api/ws/origins", headers: headers)
                #expect(status == testCase.status, "Origin \(testCase.origin ?? "-") Host \(testCase.host)")
            }
        }
        try await withGateway("sec-ws-configured", environment: ["SERVER_BASE_URL": "http://paint.example:8000", "ALLOWED_ORIGINS": "https://studio.example"]) { gateway, _ in
            let port = gateway.port
            let cases: [(origin: String, host: String, status: Int)] = [
                ("http://paint.example:8000", "paint.example:8000", 101),
                ("http://paint.example", "paint.example", 403),
                ("https://paint.example:8000", "paint.example:8000", 403),
                ("https://studio.example", "studio.example", 101),
                ("http://studio.example", "studio.example", 403),
                ("http://127.0.0.1:\(port)", "127.0.0.1:\(port)", 101),
            ]
            for testCase in cases {
                let status = try upgradeStatus(port: port, path: "/api/ws/origins", headers: [("Host", testCase.host), ("Origin", testCase.origin)])
                #expect(status == testCase.status, "Origin \(testCase.origin) Host \(testCase.host)")
            }
        }
    }
}
