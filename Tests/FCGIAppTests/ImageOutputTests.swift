import Comfy
import Foundation
import Testing

/// What comes out: every image of the output node (batches), through real nginx and the emulator.
@Suite(.serialized)
struct ImageOutputTests {
    static func batch(_ size: Int, output: String) -> [String: JSONValue] {
        var workflow = Workflows.txt2img(text: "three cats", output: output)
        workflow["5"] = Workflows.node("EmptyLatentImage", ["width": 64, "height": 64, "batch_size": .number(Double(size))])
        return workflow
    }

    @Test(arguments: ["SaveImage", "SaveImageWebsocket"])
    func aBatchAnswersEveryImageInOrderAndTheFirstAsURL(_ output: String) async throws {
        try await withGateway("out-batch-\(output)") { gateway, _ in
            let response = try await gateway.post("/api/generate", json: Workflows.body(Self.batch(3, output: output)))
            #expect(response.status == 200, "\(response.bodyText)")
            #expect(response.header("X-Image-Count") == "3")
            let answer = try JSONValue.parse(response.body)
            let urls = (answer["urls"]?.arrayValue ?? []).compactMap(\.stringValue)
            #expect(urls.count == 3)
            #expect(answer["url"]?.stringValue == urls.first)
            #expect(answer["images"]?.arrayValue?.compactMap { $0["url"]?.stringValue } == urls)
            var indexes: [JSONValue] = []
            for url in urls {
                let image = try await gateway.get(url)
                #expect(image.status == 200)
                indexes.append(emulatorMetadata(ofPNG: image.body)?["batch_index"] ?? .null)
            }
            #expect(indexes == [0, 1, 2])
        }
    }

    /// ComfyUI writes the graph it ran into a saved PNG (`prompt`): a style's or a tool's is the
    /// operator's, and file names on its server are in it. The gateway's image has it taken out,
    /// the rest of the file as ComfyUI made it; `PNG_WORKFLOW_METADATA=keep` leaves it in.
    @Test(arguments: [("strip", ["comfy-emulator"]), ("keep", ["comfy-emulator", "prompt"])])
    func aSavedPNGLosesTheGraphComfyUIWroteIntoItUnlessKept(_ setting: String, _ keywords: [String]) async throws {
        try await withGateway("out-metadata-\(setting)", environment: ["PNG_WORKFLOW_METADATA": setting]) { gateway, _ in
            let response = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "secret style", output: "SaveImage")))
            #expect(response.status == 200, "\(response.bodyText)")
            #expect(pngTextKeywords(response.body) == keywords)
            #expect(emulatorMetadata(ofPNG: response.body)?["texts"]?.arrayValue?.first == "secret style")
            #expect(String(decoding: response.body, as: UTF8.self).contains("CLIPTextEncode") == (setting == "keep"))
            let stored = try await gateway.get(try #require(response.header("X-Image-URL")))
            #expect(stored.body == response.body, "the stored file is the answer's")
        }
    }

    @Test func generateFileAnswersOneImageOfABatchChosenByIndex() async throws {
        try await withGateway("out-index") { gateway, _ in
            let body = Workflows.body(Self.batch(3, output: "SaveImage"))
            let first = try await gateway.post("/api/generate_file", json: body)
            #expect(first.status == 200, "\(first.bodyText)")
            #expect(first.header("X-Image-Count") == "3")
            #expect(emulatorMetadata(ofPNG: first.body)?["batch_index"] == 0)
            let third = try await gateway.post("/api/generate_file?index=2", json: body)
            #expect(third.status == 200, "\(third.bodyText)")
            #expect(emulatorMetadata(ofPNG: third.body)?["batch_index"] == 2)
            #expect(third.header("X-Image-URL") == "/output_images/\(Digest.hex(Digest.sha256(third.body))).png")
            let past = try await gateway.post("/api/generate_file?index=3", json: body)
            #expect(past.status == 400)
            #expect(try JSONValue.parse(past.body)["error"]?["parameter"] == "index")
            let negative = try await gateway.post("/api/generate_file?index=-1", json: body)
            #expect(negative.status == 400)
        }
    }

    @Test func anAsyncJobsResultListsEveryImage() async throws {
        try await withGateway("out-job") { gateway, _ in
            let response = try await gateway.post("/api/jobs", json: Workflows.body(Self.batch(2, output: "SaveImageWebsocket")))
            let id = try #require(try JSONValue.parse(response.body)["id"]?.stringValue)
            try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["status"] == "completed" }
            let result = try await gateway.job(id)["result"]
            #expect(result?["urls"]?.arrayValue?.count == 2)
            #expect(result?["images"]?.arrayValue?.last?["content_type"] == "image/png")
        }
    }

    @Test(arguments: [("webp", "image/webp", "webp", "WEBP"), ("jpeg", "image/jpeg", "jpg", "JPEG"), ("jpg", "image/jpeg", "jpg", "JPEG")])
    func outputFormatConvertsEveryImageAndPillowDecodesIt(_ format: String, _ type: String, _ ext: String, _ pillowFormat: String) async throws {
        try await withGateway("out-\(format)") { gateway, _ in
            var body = Workflows.body(Self.batch(2, output: "SaveImage")).objectValue!
            body["output_format"] = .string(format)
            body["quality"] = 80
            let response = try await gateway.post("/api/generate", json: .object(body))
            #expect(response.status == 200, "\(response.bodyText)")
            let answer = try JSONValue.parse(response.body)
            #expect(answer["content_type"]?.stringValue == type)
            let urls = (answer["urls"]?.arrayValue ?? []).compactMap(\.stringValue)
            #expect(urls.count == 2)
            for url in urls {
                #expect(url.hasSuffix(".\(ext)"))
                let image = try await gateway.get(url)
                #expect(image.status == 200)
                #expect(image.header("Content-Type") == type)
                // Content-addressed by the converted bytes.
                #expect(url == "/output_images/\(Digest.hex(Digest.sha256(image.body))).\(ext)")
                #expect(try pillowDescription(of: image.body) == "\(pillowFormat) 16x16")
            }
        }
    }

    @Test func badOutputFormatOrQualityIsRefusedBeforeAnythingRuns() async throws {
        try await withGateway("out-bad-format") { gateway, emulator in
            for (field, value) in [("output_format", JSONValue.string("gif")), ("quality", 0), ("quality", 101), ("quality", .number(50.5)), ("output_format", 3)] {
                var body = Workflows.body(Workflows.txt2img(text: "x")).objectValue!
                body[field] = value
                let response = try await gateway.post("/api/generate", json: .object(body))
                #expect(response.status == 400, "\(field)=\(value)")
                #expect(try JSONValue.parse(response.body)["error"]?["parameter"]?.stringValue == field)
            }
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }
}

/// `FORMAT WxH` as Pillow, an independent decoder, reads the image (it decodes every pixel).
func pillowDescription(of bytes: [UInt8]) throws -> String {
    let path = NSTemporaryDirectory() + "pillow-\(UUID().uuidString)"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    defer { try? FileManager.default.removeItem(atPath: path) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", "import sys; from PIL import Image; i = Image.open(sys.argv[1]); i.load(); print(f'{i.format} {i.width}x{i.height}')", path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    process.waitUntilExit()
    return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}
