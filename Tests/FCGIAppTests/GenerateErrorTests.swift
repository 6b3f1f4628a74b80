import Comfy
import Foundation
import Testing

/// Every way a generate call can fail answers a clear JSON error and leaves OUTPUT_DIR clean.
@Suite(.serialized)
struct GenerateErrorTests {
    /// The `error` object of a JSON error answer.
    func error(of response: CurlResponse) throws -> JSONValue {
        #expect(response.header("Content-Type")?.hasPrefix("application/json") == true)
        return try #require(try JSONValue.parse(response.body)["error"])
    }

    @Test func badRequestBodiesAreRefusedWithTheirReason() async throws {
        try await withGateway("err-bodies") { gateway, emulator in
            let cases: [(body: String, code: String, mentions: String)] = [
                ("{not json", "invalid_json", "JSON"),
                ("", "invalid_json", "empty"),
                ("[1,2]", "invalid_request", "object"),
                (#"{"output_node_id": "9"}"#, "invalid_request", "workflow_data"),
                (#"{"workflow_data": "text"}"#, "invalid_request", "workflow_data"),
                (#"{"workflow_data": {"1": {"inputs": {}}}}"#, "invalid_request", "class_type"),
                (#"{"workflow_data": {"1": {"class_type": "LoadImage"}}, "output_node_id": [1]}"#, "invalid_request", "output_node_id"),
                (#"{"workflow_data": {"1": {"class_type": "LoadImage"}}, "response_type": "zip"}"#, "invalid_request", "response_type"),
                (#"{"workflow_data": {"nodes": [], "links": []}}"#, "invalid_request", "API"),
            ]
            for testCase in cases {
                let response = try await gateway.post("/api/generate", body: Array(testCase.body.utf8))
                #expect(response.status == 400, "\(testCase.body)")
                let error = try error(of: response)
                #expect(error["code"] == .string(testCase.code), "\(testCase.body)")
                #expect(error["message"]?.stringValue?.contains(testCase.mentions) == true, "\(testCase.body): \(response.bodyText)")
            }
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }

    @Test func unknownOutputNodeIsNamed() async throws {
        try await withGateway("err-node") { gateway, _ in
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "x"), output: 277))
            #expect(response.status == 400)
            let error = try error(of: response)
            #expect(error["code"] == "unknown_output_node")
            #expect(error["node_id"] == "277")
            #expect(error["message"]?.stringValue?.contains("277") == true)
        }
    }

    @Test func bodyOverTheLimitIsRefusedByNginxAsJSON() async throws {
        try await withGateway("err-413", environment: ["MAX_BODY": "1m"]) { gateway, _ in
            let big = Array(repeating: UInt8(ascii: "a"), count: 2 << 20)
            let response = try await gateway.post("/api/generate", body: big)
            #expect(response.status == 413)
            #expect(try error(of: response)["code"] == "payload_too_large")
        }
    }

    @Test func comfyValidationFailureCarriesNodeErrors() async throws {
        try await withGateway("err-validation") { gateway, _ in
            // A sampler ComfyUI does not have (a missing model is the gateway's own model_not_found).
            var workflow = Workflows.txt2img(text: "x")
            var sampler = workflow["3"]!["inputs"]!.objectValue!
            sampler["sampler_name"] = "no_such_sampler"
            workflow["3"] = Workflows.node("KSampler", sampler)
            let response = try await gateway.post("/api/generate", json: Workflows.body(workflow))
            #expect(response.status == 400)
            let body = try JSONValue.parse(response.body)
            #expect(body["error"]?["code"] == "workflow_invalid")
            #expect(body["error"]?["comfy"]?["type"] == "prompt_outputs_failed_validation")
            let nodeError = try #require(body["node_errors"]?["3"])
            #expect(nodeError["errors"]?.arrayValue?.first?["type"] == "value_not_in_list")
            #expect(nodeError["class_type"] == "KSampler")
        }
    }

    /// A caller's graph that asks a GPU for more than the workflow limits is refused before
    /// anything runs, naming the node and the input; a workflow tool's own graph is not held to them.
    @Test func aWorkflowOverTheLimitsIsRefusedBeforeItReachesComfyUI() async throws {
        try await withGateway("err-limits", environment: ["WORKFLOW_MAX_BATCH": "4"]) { gateway, emulator in
            var workflow = Workflows.txt2img(text: "many")
            workflow["5"] = Workflows.node("EmptyLatentImage", ["width": 64, "height": 64, "batch_size": 64])
            let response = try await gateway.post("/api/generate", json: Workflows.body(workflow))
            #expect(response.status == 400, "\(response.bodyText)")
            let error = try error(of: response)
            #expect(error["code"] == "workflow_refused")
            #expect(error["node_id"] == "5")
            #expect(error["input"] == "batch_size")
            #expect(error["message"]?.stringValue?.contains("WORKFLOW_MAX_BATCH") == true)
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }

    @Test func unknownNodeClassIsAValidationError() async throws {
        try await withGateway("err-class") { gateway, _ in
            var workflow = Workflows.txt2img(text: "x")
            workflow["2"] = Workflows.node("NoSuchNodeClass", [:])
            let response = try await gateway.post("/api/generate", json: Workflows.body(workflow))
            #expect(response.status == 400)
            let error = try error(of: response)
            #expect(error["comfy"]?["type"] == "invalid_prompt")
            #expect(error["message"]?.stringValue?.contains("NoSuchNodeClass") == true)
        }
    }

    @Test func executionErrorIsBadGatewayWithComfyDetails() async throws {
        try await withGateway("err-exec") { gateway, emulator in
            try await emulator.configure(["fail_node_class": "VAEDecode"])
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "x")))
            #expect(response.status == 502)
            let error = try error(of: response)
            #expect(error["code"] == "execution_failed")
            #expect(error["node_id"] == "8")
            #expect(error["node_type"] == "VAEDecode")
            #expect(error["exception_type"] == "RuntimeError")
            #expect(error["message"]?.stringValue?.contains("emulated failure") == true)
            #expect(try gateway.storedFiles().isEmpty)
        }
    }

    @Test func unreachableComfyIsServiceUnavailableAndOnlyOperatorsLearnWhichBackend() async throws {
        try await withGateway("err-down") { gateway, emulator in
            emulator.stop()
            try await gateway.waitUntilHealthy(503)
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "x")))
            #expect(response.status == 503)
            let error = try error(of: response)
            #expect(error["code"] == "backend_unavailable")
            // A caller does not learn the GPU servers' addresses; operators read them in /healthz.
            let address = try #require(URLComponents(string: emulator.url))
            #expect(!response.bodyText.contains(address.host ?? "?"), "\(response.bodyText)")
            #expect(!response.bodyText.contains("\(address.port ?? 0)"), "\(response.bodyText)")
            #expect(response.bodyText.contains("ComfyUI backend"), "\(response.bodyText)")
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            #expect(health["status"] == "unavailable")
            #expect(health["backends"]?.arrayValue?.first?["state"] == "down")
            #expect(health["backends"]?.arrayValue?.first?["url"]?.stringValue == emulator.url)
        }
    }

    /// ComfyUI's `/prompt` answers 500 for every prompt (a handler that raises) while its socket
    /// and `/system_stats` are fine: three failures in a row (here one call's three attempts)
    /// take the backend out, so callers get 503 instead of more failed submissions; after
    /// `BACKEND_REST_COOLOFF` one call tries it again, and a mended ComfyUI serves it.
    @Test func aComfyUIWhosePromptCallsKeepFailingIsTakenOutForACooloff() async throws {
        try await withGateway("err-rest-failing", environment: ["BACKEND_REST_COOLOFF": "8s"]) { gateway, emulator in
            try await emulator.configure(["http_status": 500, "http_status_paths": .array(["/prompt"])])
            let refused = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "refused")))
            #expect(refused.status == 502, "\(refused.bodyText)")
            #expect(try await emulator.stats()["http_status_answers"] == 3, "one call, three attempts")
            try await gateway.waitUntilHealthy(503)
            let health = try await gateway.get("/healthz")
            #expect(health.bodyText.contains("REST calls failed 3 times in a row"), "\(health.bodyText)")
            #expect(gateway.app.log.contains("ComfyUI's REST calls keep failing; taking it out"))
            let out = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "while out")))
            #expect(out.status == 503, "\(out.bodyText)")
            #expect(try error(of: out)["code"] == "backend_unavailable")
            #expect(try await emulator.stats()["http_status_answers"] == 3, "nothing more reached the failing ComfyUI")

            try await emulator.configure(["http_status": .null, "http_status_paths": .null])
            try await gateway.waitUntilHealthy(200)
            let mended = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "mended")))
            #expect(mended.status == 200, "\(mended.bodyText)")
            #expect(emulatorMetadata(ofPNG: mended.body)?["texts"]?.arrayValue?.first == "mended")
        }
    }

    /// What one caller brings on does not count against a shared backend: ComfyUI refusing
    /// its input image (413) is that call's 400, any number of times, and the backend stays up.
    @Test func refusedUploadsOfOneCallerDoNotTakeTheBackendOut() async throws {
        try await withGateway("err-rest-caller", environment: ["BACKEND_REST_COOLOFF": "60s"]) { gateway, emulator in
            try await emulator.configure(["http_status": 413, "http_status_paths": .array(["/upload/image"])])
            for index in 0..<4 {
                var body = Workflows.body(Sketches.style(text: "too big \(index)"), output: "8").objectValue!
                body["input_images"] = .object(["4": .string(Data(Sketches.png(seed: index)).base64EncodedString())])
                let response = try await gateway.post("/api/generate", json: .object(body))
                #expect(response.status == 400, "\(response.bodyText)")
                #expect(try error(of: response)["code"] == "workflow_invalid")
                #expect(try error(of: response)["message"]?.stringValue?.contains("refused the input image") == true)
            }
            #expect(try await emulator.stats()["http_status_answers"] == 4, "each tried once, not moved to another attempt")
            #expect(try await gateway.get("/healthz").status == 200)
            let next = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "others go on")))
            #expect(next.status == 200, "\(next.bodyText)")
        }
    }

    @Test func noResultInTimeIsGatewayTimeoutAndThePromptIsRemoved() async throws {
        try await withGateway("err-timeout", environment: ["GENERATE_TIMEOUT": "2s"]) { gateway, emulator in
            try await emulator.configure(["hang": true])
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "x")))
            #expect(response.status == 504)
            #expect(try error(of: response)["code"] == "timeout")
            try await waitUntil {
                let stats = try await emulator.stats()
                return stats["queue_deletes"]?.arrayValue?.count == 1 && stats["queue_pending"] == 0
            }
            // Targeted, never global: the interrupt names the prompt.
            let interrupts = try await emulator.stats()["interrupts"]?.arrayValue ?? []
            #expect(interrupts.allSatisfy { $0["prompt_id"] != nil })
        }
    }

    @Test func callerDisconnectingRemovesItsPrompt() async throws {
        try await withGateway("err-abandon") { gateway, emulator in
            try await emulator.configure(["hang": true])
            let caller = Task {
                try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "x")), timeout: .seconds(1))
            }
            _ = await caller.result
            try await waitUntil {
                let stats = try await emulator.stats()
                return stats["queue_deletes"]?.arrayValue?.count == 1 && stats["queue_pending"] == 0
            }
        }
    }

    /// A result frame larger than `COMFYUI_MAX_MESSAGE_BYTES` fails its prompt with the reason,
    /// and the socket every prompt on the backend shares stays open for the next one.
    @Test func aMessageLargerThanTheGatewayReadsFailsItsPromptAndLeavesTheSocketOpen() async throws {
        try await withGateway("err-huge-message", environment: ["COMFYUI_MAX_MESSAGE_BYTES": "65536"]) { gateway, emulator in
            // Incompressible pixels: a 200×200 PNG is about 120 KB.
            try await emulator.configure(["image_size": 200])
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "too large")))
            #expect(response.status == 502, "\(response.bodyText)")
            let error = try error(of: response)
            #expect(error["code"] == "execution_failed")
            #expect(error["message"]?.stringValue?.contains("more than the gateway reads (65536 bytes") == true, "\(error)")
            try await emulator.configure(["image_size": 16])
            let next = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "fits")))
            #expect(next.status == 200, "\(next.bodyText)")
            #expect(emulatorMetadata(ofPNG: next.body)?["texts"]?.arrayValue?.first == "fits")
            #expect(!gateway.app.log.contains("ComfyUI WebSocket lost"), "the socket stayed open")
            #expect(gateway.app.log.contains("ComfyUI sent a WebSocket message larger than the gateway reads"))
            #expect(try await emulator.stats()["prompts_received"] == 2, "the failed prompt was not run again")
        }
    }

    @Test func webSocketDropMidJobStillEndsWithTheRightImage() async throws {
        try await withGateway("err-wsdrop") { gateway, emulator in
            // Two WebSocket outputs: the socket drops right after the first frame, so the
            // wanted second frame is lost; the gateway settles from /history and reruns.
            var workflow = Workflows.txt2img(text: "survives a drop")
            workflow["10"] = Workflows.node("SaveImageWebsocket", ["images": Workflows.link("8", 0)])
            workflow["9"] = Workflows.node("ImageInvert", ["image": Workflows.link("8", 0)])
            workflow["11"] = Workflows.node("SaveImageWebsocket", ["images": Workflows.link("9", 0)])
            try await emulator.configure(["drop_ws_after_binary": 1, "node_delay_ms": 20])
            let response = try await gateway.post("/api/generate_file", json: Workflows.body(workflow, output: "11"))
            #expect(response.status == 200, "\(response.bodyText)")
            let metadata = emulatorMetadata(ofPNG: response.body)
            #expect(metadata?["node"] == "11")
            #expect(metadata?["texts"]?.arrayValue?.first == "survives a drop")
        }
    }

    @Test func aSocketOpenedAnewWhileTheInputUploadsIsTheOneThePromptGoesTo() async throws {
        // A prompt sent under the dropped socket's id would hear nothing: with the stall check
        // (60 s) past the call's 20 s, it would end in a 504.
        try await withGateway("err-ws-upload", environment: ["BACKEND_STALL_TIMEOUT": "60s", "GENERATE_TIMEOUT": "20s"]) { gateway, emulator in
            try await emulator.configure(["drop_ws_on_upload_ms": 1500])
            let sketch = Sketches.png(seed: 33)
            var body = Workflows.body(Sketches.style(text: "after the drop"), output: "8").objectValue!
            body["input_images"] = .object(["4": .string(Data(sketch).base64EncodedString())])
            let response = try await gateway.post("/api/generate_file", json: .object(body))
            #expect(response.status == 200, "\(response.bodyText)")
            #expect(emulatorMetadata(ofPNG: response.body)?["image_sha256"]?.stringValue == Digest.hex(Digest.sha256(sketch)))
            #expect(try await emulator.stats()["prompts_received"] == 1)
        }
    }

    @Test func sigtermLetsTheAppExitCleanlyAndTellsPaintersItIsGoingAway() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("sigterm")
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { gateway.stop() }
        try await gateway.waitUntilHealthy()
        try await emulator.configure(["node_delay_ms": 150])
        let painter = try RawConnection(port: gateway.port)
        try painter.send("GET /api/ws/going-away HTTP/1.1\r\nHost: 127.0.0.1:\(gateway.port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        #expect(try painter.receiveHead().status == 101)
        let inFlight = Task { try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "in flight"))) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(gateway.app.stop(SIGTERM) == 0)
        // A close frame saying why (1001), not a cut connection: the painter knows to connect again.
        #expect(try painter.closeCode() == 1001)
        // The request that was running when SIGTERM came still got its image.
        #expect(try await inFlight.value.status == 200)
        // The file made ahead for a next image goes with the store on the way out: the image alone stays.
        let left = try FileManager.default.contentsOfDirectory(atPath: gateway.outputDirectory)
        #expect(left.count == 1 && left.allSatisfy(RetentionSweeper.isImageFileName), "\(left)")
    }
}
