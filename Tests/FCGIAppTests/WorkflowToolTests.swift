import Comfy
import Foundation
import Testing

/// Workflows as typed tools, and input images by URL, data URL or base64, through real nginx,
/// FastCGI and the emulator.
@Suite(.serialized)
struct WorkflowToolTests {
    /// Image URLs in these tests are on 127.0.0.1: only reachable with the SSRF guard opened.
    static let privateURLs = ["INPUT_URL_ALLOW_PRIVATE": "true"]

    @Test func toolCallWritesPromptSeedAndFetchedImageIntoTheWorkflow() async throws {
        try await withGateway("tool-call", environment: Self.privateURLs) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            let images = try ImageServer(directory: gateway.runDirectory, http: gateway.http)
            defer { images.stop() }
            let sketch = Sketches.png(seed: 3)
            let url = try images.serve(sketch, as: "sketch.png")

            let response = try await gateway.post("/api/workflows/paint/run", json: .object([
                "prompt": "a lighthouse at dusk", "seed": 7, "image": .string(url), "response_type": "file",
            ]))
            #expect(response.status == 200, "\(response.bodyText)")
            #expect(response.header("Content-Type") == "image/png")
            let metadata = try #require(emulatorMetadata(ofPNG: response.body))
            #expect(metadata["texts"] == .array(["a lighthouse at dusk", "blurry"]))
            #expect(metadata["seeds"] == .array([7]))
            // The emulator hashes the file LoadImage opened: it is the image behind the URL.
            #expect(metadata["image_sha256"]?.stringValue == Digest.hex(Digest.sha256(sketch)))
            #expect(try await images.requests() == ["/files/sketch.png"])
            #expect(try await emulator.stats()["uploads"] == 1)
        }
    }

    @Test func workflowsAreListedWithInferredOrDeclaredParameters() async throws {
        try await withGateway("tool-list") { gateway, _ in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            var declared = Workflows.txt2img(text: "a cat")
            declared["6"] = .object([
                "class_type": "CLIPTextEncode", "inputs": declared["6"]!["inputs"]!,
                "_meta": .object(["title": "input:subject", "description": "Who is in the picture."]),
            ])
            declared["5"] = .object([
                "class_type": "EmptyLatentImage", "inputs": declared["5"]!["inputs"]!,
                "_meta": .object(["title": "input:size", "minimum": 64, "maximum": 1024]),
            ])
            try Sketches.install(declared, as: "poster", in: gateway)

            let list = try JSONValue.parse(try await gateway.get("/api/workflows").body)
            let tools = try #require(list["workflows"]?.arrayValue)
            #expect(tools.compactMap { $0["name"]?.stringValue } == ["paint", "poster"])
            let paint = try #require(tools.first)
            let names = paint["parameters"]?.arrayValue?.compactMap { $0["name"]?.stringValue }
            #expect(names == ["prompt", "negative_prompt", "seed", "steps", "image"])
            let image = try #require(paint["parameters"]?.arrayValue?.last)
            #expect(image["type"] == "image")
            #expect(image["required"] == true)
            #expect(paint["parameters"]?.arrayValue?.first?["default"] == "a house on a hill")

            // Declared parameters replace the inferred ones; the size goes to width, the main widget.
            let poster = try JSONValue.parse(try await gateway.get("/api/workflows/poster").body)
            let parameters = try #require(poster["parameters"]?.arrayValue)
            #expect(parameters.compactMap { $0["name"]?.stringValue } == ["size", "subject"])
            #expect(parameters.first?["maximum"] == 1024)
            #expect(parameters.first?["default"] == 64)
            #expect(parameters.last?["description"] == "Who is in the picture.")

            let run = try await gateway.post("/api/workflows/poster/run", json: .object(["subject": "a dog", "size": 512]))
            #expect(run.status == 200, "\(run.bodyText)")
            let missing = try await gateway.get("/api/workflows/nothing")
            #expect(missing.status == 404)
        }
    }

    @Test func aWorkflowsOwnValuesAreItsDefaultsEvenPastTheirRangesAndOnlyScalarsAreAdvertised() async throws {
        try await withGateway("tool-defaults") { gateway, emulator in
            var workflow = Workflows.txt2img(text: "a big seed")
            // ComfyUI's largest seed, saved in the workflow: past 2^53, a caller could not send it.
            workflow["3"] = workflow["3"]!.settingInput("seed", .largeInteger("18446744073709551615"))
            workflow["5"] = .object([
                "class_type": "EmptyLatentImage", "inputs": workflow["5"]!["inputs"]!,
                "_meta": .object(["title": "input:size", "default": .array([64, 64]), "widget": "width"]),
            ])
            workflow["7"] = .object([
                "class_type": "CLIPTextEncode", "inputs": workflow["7"]!["inputs"]!,
                "_meta": .object(["title": "input:avoid", "default": .null]),
            ])
            workflow["20"] = .object([
                "class_type": "LoadImage", "inputs": .object(["image": "example.png"]), "_meta": .object(["title": "input:photo", "default": .null]),
            ])
            try Sketches.install(workflow, as: "big-seed", in: gateway)
            let image = Data(Sketches.png(seed: 5)).base64EncodedString()
            let document = try JSONValue.parse(try await gateway.get("/api/workflows/openapi.json").body)
            let schema = try #require(document["paths"]?["/api/workflows/big-seed/run"]?["post"]?["requestBody"]?["content"]?["application/json"]?["schema"])
            #expect(schema["properties"]?["size"]?["default"] == nil, "a list is no default Dify takes")
            #expect(schema["required"]?.arrayValue?.contains("avoid") == true, "default null: none")
            #expect(schema["required"]?.arrayValue?.contains("photo") == true, "an image's too")

            let missing = try await gateway.post("/api/workflows/big-seed/run", json: .object(["size": 64, "photo": .string(image)]))
            #expect(missing.status == 400)
            #expect(try JSONValue.parse(missing.body)["error"]?["parameter"] == "avoid")
            let noPhoto = try await gateway.post("/api/workflows/big-seed/run", json: .object(["size": 64, "avoid": "blur"]))
            #expect(noPhoto.status == 400)
            #expect(try JSONValue.parse(noPhoto.body)["error"]?["parameter"] == "photo")
            let run = try await gateway.post("/api/workflows/big-seed/run", json: .object(["size": 64, "avoid": "blur", "photo": .string(image), "response_type": "file"]))
            #expect(run.status == 200, "\(run.bodyText)")
            #expect(emulatorMetadata(ofPNG: run.body)?["seeds"] == .array([.largeInteger("18446744073709551615")]))
            #expect(try await emulator.stats()["prompts_received"] == 1)
        }
    }

    @Test func wrongArgumentsAreRefusedNamingTheParameterBeforeComfyUISeesThem() async throws {
        try await withGateway("tool-bad") { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            let image = JSONValue.string(Data(Sketches.png(seed: 1)).base64EncodedString())
            let cases: [(JSONValue, String, String)] = [
                (.object(["image": image, "colour": "red"]), "colour", "no parameter"),
                (.object(["image": image, "seed": "7"]), "seed", "must be a number"),
                (.object(["image": image, "seed": .number(1.5)]), "seed", "whole number"),
                (.object(["image": image, "steps": 0]), "steps", "at least 1"),
                (.object(["image": image, "steps": 20000]), "steps", "at most 10000"),
                (.object(["image": image, "seed": .largeInteger("12345678901234567")]), "seed", "at most 9007199254740991, got 12345678901234567"),
                (.object(["image": image, "seed": .number(1e17)]), "seed", "at most 9007199254740991, got 100000000000000000"),
                (.object(["image": image, "prompt": 3]), "prompt", "must be a string"),
                (.object(["prompt": "no image"]), "image", "required"),
                (.object(["image": "not base64 at all!"]), "image", "not an http(s) URL"),
                (.object(["image": "data:image/png;base64,iVBORw0KGgo="]), "image", "not a usable image"),
                (.object(["image": image, "async": "yes"]), "async", "true or false"),
            ]
            for (arguments, parameter, words) in cases {
                let response = try await gateway.post("/api/workflows/paint/run", json: arguments)
                #expect(response.status == 400, "\(arguments): \(response.bodyText)")
                let error = try JSONValue.parse(response.body)["error"]
                #expect(error?["code"] == "invalid_parameter", "\(arguments)")
                #expect(error?["parameter"]?.stringValue == parameter, "\(arguments)")
                #expect(error?["message"]?.stringValue?.contains(words) == true, "\(arguments): \(response.bodyText)")
            }
            let form = try await gateway.post("/api/workflows/paint/run", body: Array("prompt=x".utf8), contentType: "application/x-www-form-urlencoded")
            #expect(form.status == 415)
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }

    /// A tool's parameters reach ComfyUI's own bounds (10000 steps), but what its caller sets is
    /// held to the workflow limits too; the operator's own values in its graph are not.
    @Test func aToolCallsArgumentsAreHeldToTheWorkflowLimitsAndItsOwnDefaultsAreNot() async throws {
        try await withGateway("tool-limits", environment: ["WORKFLOW_MAX_STEPS": "2"]) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            let image = JSONValue.string(Data(Sketches.png(seed: 1)).base64EncodedString())
            let refused = try await gateway.post("/api/workflows/paint/run", json: .object(["image": image, "steps": 5]))
            #expect(refused.status == 400, "\(refused.bodyText)")
            let error = try JSONValue.parse(refused.body)["error"]
            #expect(error?["code"] == "workflow_refused")
            #expect(error?["input"] == "steps")
            #expect(error?["message"]?.stringValue?.contains("WORKFLOW_MAX_STEPS") == true)
            #expect(try await emulator.stats()["prompts_received"] == 0)
            // The style's own 3 steps, over the limit of 2, are the operator's.
            let run = try await gateway.post("/api/workflows/paint/run", json: .object(["image": image, "response_type": "file"]))
            #expect(run.status == 200, "\(run.bodyText)")
        }
    }

    @Test func inputImagesOnGenerateTakeBase64AndDataURLs() async throws {
        try await withGateway("input-base64") { gateway, emulator in
            let encodings: [@Sendable ([UInt8]) -> String] = [{ Data($0).base64EncodedString() }, { "data:image/png;base64," + Data($0).base64EncodedString() }]
            for (index, encode) in encodings.enumerated() {
                let sketch = Sketches.png(seed: 10 + index)
                var body = Workflows.body(Sketches.style(text: "input \(index)"), output: "8", responseType: "file").objectValue!
                body["input_images"] = .object(["4": .string(encode(sketch))])
                let response = try await gateway.post("/api/generate", json: .object(body))
                #expect(response.status == 200, "\(response.bodyText)")
                #expect(emulatorMetadata(ofPNG: response.body)?["image_sha256"]?.stringValue == Digest.hex(Digest.sha256(sketch)))
            }
            var wrongNode = Workflows.body(Sketches.style(), output: "8").objectValue!
            wrongNode["input_images"] = .object(["6": .string(Data(Sketches.png(seed: 1)).base64EncodedString())])
            let refused = try await gateway.post("/api/generate", json: .object(wrongNode))
            #expect(refused.status == 400)
            #expect(refused.bodyText.contains("not an image loader"))
            #expect(try await emulator.stats()["uploads"] == 2)
        }
    }

    @Test func multipartGenerateTakesWorkflowDataAndAnImagePartNamedByItsNode() async throws {
        try await withGateway("input-multipart") { gateway, emulator in
            let sketch = Sketches.png(seed: 30)
            let workflow = String(decoding: JSONValue.object(Sketches.style(text: "from a form")).encoded(), as: UTF8.self)
            let form = sketchForm(file: sketch, fields: ["workflow_data": workflow, "output_node_id": "8", "response_type": "file"], fileField: "4")
            let response = try await gateway.post("/api/generate", body: form.body, contentType: form.contentType)
            #expect(response.status == 200, "\(response.bodyText)")
            let metadata = try #require(emulatorMetadata(ofPNG: response.body))
            #expect(metadata["image_sha256"]?.stringValue == Digest.hex(Digest.sha256(sketch)))
            #expect(metadata["texts"]?.arrayValue?.first == "from a form")

            let stray = sketchForm(file: sketch, fields: ["workflow_data": workflow, "output_node_id": "8"], fileField: "6")
            let refused = try await gateway.post("/api/generate", body: stray.body, contentType: stray.contentType)
            #expect(refused.status == 400)
            #expect(try JSONValue.parse(refused.body)["error"]?["node_id"] == "6")
            let bomb = sketchForm(file: Sketches.bombHeader(), fields: ["workflow_data": workflow, "output_node_id": "8"], fileField: "4")
            let tooLarge = try await gateway.post("/api/generate", body: bomb.body, contentType: bomb.contentType)
            #expect(tooLarge.status == 413, "\(tooLarge.bodyText)")
            #expect(try await emulator.stats()["prompts_received"] == 1)
        }
    }

    @Test func aRequestsImageURLsAreFetchedSideBySideWithinOneTimeout() async throws {
        let environment = Self.privateURLs.merging(["INPUT_URL_TIMEOUT": "2s"]) { $1 }
        try await withGateway("input-together", environment: environment) { gateway, emulator in
            let images = try ImageServer(directory: gateway.runDirectory, http: gateway.http)
            defer { images.stop() }
            var workflow = Sketches.style()
            var given: [String: JSONValue] = [:]
            for id in ["101", "102", "103"] {
                workflow[id] = Workflows.node("LoadImage", ["image": "example.png"])
                given[id] = .string(images.url("/slow"))
            }
            var body = Workflows.body(workflow, output: "8").objectValue!
            body["input_images"] = .object(given)
            let response = try await gateway.post("/api/generate", json: .object(body))
            #expect(response.status == 400, "\(response.bodyText)")
            #expect(try JSONValue.parse(response.body)["error"]?["code"] == "input_unavailable")
            // All three were asked for within the one timeout; one after another, the first
            // timeout would have ended the request before the others were asked for.
            #expect(try await images.requests() == ["/slow", "/slow", "/slow"])
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }

    @Test func moreInputImagesThanAJobTakesAre413BeforeAnyIsFetched() async throws {
        try await withGateway("input-count") { gateway, emulator in
            var workflow = Sketches.style()
            var images: [String: JSONValue] = [:]
            for index in 0...InputImages.maxPerJob {
                let id = "\(100 + index)"
                workflow[id] = Workflows.node("LoadImage", ["image": "example.png"])
                images[id] = .string(Data(Sketches.png(seed: index)).base64EncodedString())
            }
            var body = Workflows.body(workflow, output: "8").objectValue!
            body["input_images"] = .object(images)
            let response = try await gateway.post("/api/generate", json: .object(body))
            #expect(response.status == 413, "\(response.bodyText)")
            #expect(try JSONValue.parse(response.body)["error"]?["parameter"] == "input_images")
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }

    @Test func asyncToolCallKeepsItsInputImageUntilTheJobRuns() async throws {
        try await withGateway("tool-async") { gateway, _ in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            let sketch = Sketches.png(seed: 21)
            let response = try await gateway.post("/api/workflows/paint/run", json: .object([
                "image": .string(Data(sketch).base64EncodedString()), "prompt": "later", "async": true,
            ]))
            #expect(response.status == 202, "\(response.bodyText)")
            let id = try #require(try JSONValue.parse(response.body)["id"]?.stringValue)
            try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["status"] == "completed" }
            let url = try #require(try await gateway.job(id)["result"]?["url"]?.stringValue)
            let image = try await gateway.get(url)
            let metadata = try #require(emulatorMetadata(ofPNG: image.body))
            #expect(metadata["image_sha256"]?.stringValue == Digest.hex(Digest.sha256(sketch)))
            #expect(metadata["texts"]?.arrayValue?.first == "later")
        }
    }

    @Test func imageURLsOnPrivateAddressesAreRefusedUnlessAllowed() async throws {
        try await withGateway("input-ssrf") { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            let images = try ImageServer(directory: gateway.runDirectory, http: gateway.http)
            defer { images.stop() }
            let url = try images.serve(Sketches.png(seed: 2), as: "inside.png")
            for target in [url, url.replacingOccurrences(of: "127.0.0.1", with: "localhost"), "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"] {
                let response = try await gateway.post("/api/workflows/paint/run", json: .object(["image": .string(target)]))
                #expect(response.status == 400, "\(target): \(response.bodyText)")
                #expect(try JSONValue.parse(response.body)["error"]?["parameter"] == "image")
            }
            let refused = try await gateway.post("/api/workflows/paint/run", json: .object(["image": .string(url)]))
            #expect(refused.bodyText.contains("INPUT_URL_ALLOW_PRIVATE"))
            #expect(try await images.requests().isEmpty)
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }

    @Test func imageURLsAreBoundedInBytesRedirectsAndTime() async throws {
        let environment = Self.privateURLs.merging(["INPUT_MAX_BYTES": "65536", "INPUT_URL_TIMEOUT": "2s"]) { $1 }
        try await withGateway("input-bounds", environment: environment) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            let images = try ImageServer(directory: gateway.runDirectory, http: gateway.http)
            defer { images.stop() }
            _ = try images.serve(Sketches.png(seed: 4), as: "far.png")
            let cases: [(String, Int, String)] = [
                ("/redirect/3/far.png", 200, ""),
                ("/redirect/4/far.png", 400, "input_unavailable"),
                ("/big/200000", 413, "payload_too_large"),
                ("/status/404", 400, "input_unavailable"),
                ("/slow", 400, "input_unavailable"),
            ]
            for (path, status, code) in cases {
                let response = try await gateway.post("/api/workflows/paint/run", json: .object(["image": .string(images.url(path))]))
                #expect(response.status == status, "\(path): \(response.bodyText)")
                if !code.isEmpty { #expect(try JSONValue.parse(response.body)["error"]?["code"]?.stringValue == code, "\(path)") }
            }
            #expect(try await emulator.stats()["prompts_received"] == 1)
        }
    }

    @Test func aURLWithoutAnHTTPAnswerGetsOneTextWhateverListensOnItsPort() async throws {
        try await withGateway("input-no-http", environment: Self.privateURLs) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "paint", in: gateway)
            let images = try ImageServer(directory: gateway.runDirectory, http: gateway.http)
            defer { images.stop() }
            // Nothing listens on the first; something that is not HTTP answers on the second.
            let urls = ["http://127.0.0.1:\(TestPaths.freePort())/a.png", images.url("/not-http")]
            var messages: [String] = []
            for url in urls {
                let response = try await gateway.post("/api/workflows/paint/run", json: .object(["image": .string(url)]))
                #expect(response.status == 400, "\(url): \(response.bodyText)")
                let error = try JSONValue.parse(response.body)["error"]
                #expect(error?["code"] == "input_unavailable")
                messages.append(error?["message"]?.stringValue ?? "")
            }
            #expect(messages == Array(repeating: "image's URL could not be fetched: no HTTP answer came from its server", count: 2))
            #expect(try await images.requests() == ["/not-http"])
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }
}
