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
}
