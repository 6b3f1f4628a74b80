import Comfy
import Foundation
import Testing

/// `/api/generate` and `/api/generate_file` through real nginx, FastCGI and the emulator.
@Suite(.serialized)
struct GenerateTests {
    @Test func generateReturnsURLOfImageThatNginxServesImmutable() async throws {
        try await withGateway("gen-url") { gateway, _ in
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "purple galaxy bottle")))
            #expect(response.status == 200, "\(response.bodyText)")
            let answer = try JSONValue.parse(response.body)
            let url = try #require(answer["url"]?.stringValue)
            #expect(url.hasPrefix("/output_images/"))
            #expect(url.hasSuffix(".png"))

            let image = try await gateway.get(url)
            #expect(image.status == 200)
            #expect(image.header("Cache-Control") == "public, max-age=31536000, immutable")
            #expect(image.header("Content-Type") == "image/png")
            let metadata = try #require(emulatorMetadata(ofPNG: image.body))
            #expect(metadata["texts"]?.arrayValue?.first == "purple galaxy bottle")
            #expect(metadata["node"] == "9")
            // Content-addressed: the name is the SHA-256 of the bytes.
            #expect(url == "/output_images/\(Digest.hex(Digest.sha256(image.body))).png")
        }
    }

    @Test func generateFileReturnsImageBytesWithFileNameAndStoredURL() async throws {
        try await withGateway("gen-file") { gateway, _ in
            let response = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "a red fox")))
            #expect(response.status == 200, "\(response.bodyText)")
            #expect(response.header("Content-Type") == "image/png")
            let name = Digest.hex(Digest.sha256(response.body)) + ".png"
            #expect(response.header("Content-Disposition") == "attachment; filename=\"\(name)\"")
            #expect(response.header("X-Image-URL") == "/output_images/\(name)")
            #expect(emulatorMetadata(ofPNG: response.body)?["texts"]?.arrayValue?.first == "a red fox")
            #expect(try gateway.storedFiles() == [name])
        }
    }

    @Test func aSeedPast2To53ReachesComfyUIAsSent() async throws {
        try await withGateway("gen-seed") { gateway, _ in
            // ComfyUI's seeds go to 2^64 - 1; as a double this one would be 2^64, over its maximum.
            let body = #"{"output_node_id": "9", "workflow_data": "# + String(decoding: JSONValue.object(Workflows.txt2img(text: "exact seed")).encoded(), as: UTF8.self)
                .replacingOccurrences(of: #""seed":42"#, with: #""seed":18446744073709551615"#) + "}"
            #expect(body.contains("18446744073709551615"))
            let response = try await gateway.post("/api/generate_file", body: Array(body.utf8))
            #expect(response.status == 200, "\(response.bodyText)")
            #expect(emulatorMetadata(ofPNG: response.body)?["seeds"] == .array([.largeInteger("18446744073709551615")]))
        }
    }

    @Test func responseTypeFileOnGenerateAnswersBytes() async throws {
        try await withGateway("gen-type-file") { gateway, _ in
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "file please"), responseType: "file"))
            #expect(response.status == 200)
            #expect(response.header("Content-Type") == "image/png")
            #expect(emulatorMetadata(ofPNG: response.body)?["texts"]?.arrayValue?.first == "file please")
        }
    }

    @Test(arguments: ["SaveImage", "PreviewImage"])
    func fileOutputNodesAreFetchedThroughHistoryAndView(_ output: String) async throws {
        try await withGateway("gen-\(output)") { gateway, emulator in
            let response = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "saved \(output)", output: output)))
            #expect(response.status == 200, "\(response.bodyText)")
            let metadata = try #require(emulatorMetadata(ofPNG: response.body))
            #expect(metadata["class_type"] == .string(output))
            #expect(metadata["texts"]?.arrayValue?.first == .string("saved \(output)"))
            // The history entry is deleted once the image is fetched.
            try await waitUntil { try await emulator.stats()["history_deletes"]?.arrayValue?.count == 1 }
        }
    }

    @Test func outputNodeIDChoosesBetweenTwoOutputs() async throws {
        try await withGateway("gen-choose") { gateway, _ in
            var workflow = Workflows.txt2img(text: "two outputs")
            workflow["10"] = Workflows.node("SaveImage", ["images": Workflows.link("8", 0), "filename_prefix": "other"])
            for (wanted, classType) in [("9", "SaveImageWebsocket"), ("10", "SaveImage")] {
                let response = try await gateway.post("/api/generate_file", json: Workflows.body(workflow, output: .string(wanted)))
                #expect(response.status == 200, "\(response.bodyText)")
                let metadata = emulatorMetadata(ofPNG: response.body)
                #expect(metadata?["node"] == .string(wanted))
                #expect(metadata?["class_type"] == .string(classType))
            }
            // A number works as well as a string (the original generate API's example sends 277).
            let numeric = try await gateway.post("/api/generate_file", json: Workflows.body(workflow, output: 10))
            #expect(emulatorMetadata(ofPNG: numeric.body)?["node"] == "10")
        }
    }

    @Test(arguments: [JSONValue.number(0), .string(""), .null])
    func missingOutputNodeTakesFirstImage(_ output: JSONValue) async throws {
        try await withGateway("gen-first") { gateway, _ in
            let response = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "first"), output: output))
            #expect(response.status == 200, "\(response.bodyText)")
            #expect(emulatorMetadata(ofPNG: response.body)?["node"] == "9")
        }
    }

    @Test func fiftyConcurrentCallsEachGetTheirOwnImageAndEachPromptsHistoryIsDeletedOnce() async throws {
        try await withGateway("gen-50", environment: ["FCGI_THREADS": "128"]) { gateway, emulator in
            let results = try await withThrowingTaskGroup(of: (Int, Int, String?).self) { group in
                for index in 0..<50 {
                    group.addTask {
                        let response = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "call \(index)", seed: index)))
                        let text = emulatorMetadata(ofPNG: response.body)?["texts"]?.arrayValue?.first?.stringValue
                        return (index, response.status, text)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.count == 50)
            for (index, status, text) in results {
                #expect(status == 200)
                #expect(text == "call \(index)")
            }
            #expect(try gateway.storedFiles().count == 50)
            // Deletions that come while one runs go together in the next request.
            try await waitUntil { try await emulator.stats()["history_deletes"]?.arrayValue?.count == 50 }
            let stats = try await emulator.stats()
            #expect(Set(stats["history_deletes"]?.arrayValue?.compactMap(\.stringValue) ?? []).count == 50)
            let requests = try #require(stats["history_delete_requests"]?.intValue)
            #expect(requests >= 1 && requests <= 50)
        }
    }

    @Test func absoluteURLsWhenServerBaseURLIsSet() async throws {
        try await withGateway("gen-base", environment: ["SERVER_BASE_URL": "https://img.example.com/"]) { gateway, _ in
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "absolute")))
            let url = try #require(try JSONValue.parse(response.body)["url"]?.stringValue)
            #expect(url.hasPrefix("https://img.example.com/output_images/"))
        }
    }
}

/// Polls `condition` until it holds (for effects that happen after a response, e.g. cleanup).
func waitUntil(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("condition not met within \(timeout)")
}
