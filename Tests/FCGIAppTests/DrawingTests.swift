import Comfy
import Foundation
import Testing

/// The real-time drawing API through real nginx (HTTP and the WebSocket upgrade) and the emulator.
@Suite(.serialized)
struct DrawingTests {
    /// Runs `body` with a gateway that has the test style installed as `realistic`.
    func withDrawingGateway<T>(_ label: String, emulatorArguments: [String] = [], _ body: (Gateway, Emulator) async throws -> T) async throws -> T {
        try await withGateway(label, emulatorArguments: emulatorArguments) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            return try await body(gateway, emulator)
        }
    }

    func result(_ gateway: Gateway, _ session: String) async throws -> JSONValue? {
        let response = try await gateway.get("/api/result/\(session)")
        #expect(response.status == 200)
        return emulatorMetadata(ofPNG: response.body)
    }

    /// The session's latest result, or `nil` while it has none (for polling).
    /// The sessions open, as `/metrics` tells.
    func drawingSessions(_ gateway: Gateway) async throws -> Double? {
        let metrics = try await gateway.get("/metrics").bodyText
        let line = metrics.split(separator: "\n").first { $0.hasPrefix("comfy_gateway_drawing_sessions ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    func latestResult(_ gateway: Gateway, _ session: String) async throws -> JSONValue? {
        let response = try await gateway.get("/api/result/\(session)")
        return response.status == 200 ? emulatorMetadata(ofPNG: response.body) : nil
    }

    @Test func sketchUploadReportsProgressInOrderThenTheResultOfThatSketch() async throws {
        try await withDrawingGateway("draw-upload") { gateway, emulator in
            try await emulator.configure(["node_delay_ms": 20])
            let before = try await gateway.get("/api/result/painter-1")
            #expect(before.status == 404)
            #expect(try JSONValue.parse(before.body)["error"]?["code"] == "not_found")

            let client = try await DrawingClient.connect(port: gateway.port, sessionID: "painter-1")
            let sketch = Sketches.png(seed: 1)
            let form = sketchForm(file: sketch, fields: ["session_id": "painter-1", "style": "realistic"])
            let upload = try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType)
            #expect(upload.status == 200, "\(upload.bodyText)")
            let answer = try JSONValue.parse(upload.body)
            #expect(answer["session_id"] == "painter-1")
            #expect(answer["status"] == "uploaded")
            #expect(answer["websocket_url"] == "/api/ws/painter-1")
            #expect(answer["message"]?.stringValue != nil)

            let completed = try await client.next(status: "completed")
            #expect(completed["result_url"] == "/api/result/painter-1")
            let messages = await client.messages
            let progress = messages.compactMap { $0["status"] == "processing" ? $0["progress"]?.doubleValue : nil }
            #expect(!progress.isEmpty)
            #expect(progress == progress.sorted(), "progress rises monotonically: \(progress)")
            #expect(progress.allSatisfy { (0..<1).contains($0) })
            #expect(messages.last?["status"] == "completed")

            let image = try await gateway.get("/api/result/painter-1")
            #expect(image.status == 200)
            #expect(image.header("Content-Type") == "image/png")
            #expect(image.header("Cache-Control") == "private, no-cache", "its URL may carry a session token: no shared cache")
            let metadata = try #require(emulatorMetadata(ofPNG: image.body))
            #expect(metadata["image_sha256"] == .string(Digest.hex(Digest.sha256(sketch))))
            #expect(metadata["texts"]?.arrayValue?.first == "a house on a hill")
            await client.close()
        }
    }

    @Test func stylesListAPIFormatWorkflowsAndFollowTheFolderWithoutRestart() async throws {
        try await withDrawingGateway("draw-styles") { gateway, _ in
            try Data(#"{"nodes": [], "links": []}"#.utf8).write(to: URL(fileURLWithPath: "\(gateway.workflowDirectory)/ui-export.json"))
            try Data("{broken".utf8).write(to: URL(fileURLWithPath: "\(gateway.workflowDirectory)/broken.json"))
            var styles = try JSONValue.parse(try await gateway.get("/api/styles").body)
            #expect(styles == .object(["styles": .array(["realistic"])]))
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            let broken = health["styles"]?["broken"]?.arrayValue ?? []
            #expect(broken.count == 2)
            #expect(broken.contains { $0["file"] == "ui-export.json" && $0["reason"]?.stringValue?.contains("Export (API)") == true })

            try Sketches.install(Sketches.style(text: "anime"), as: "anime", in: gateway)
            styles = try JSONValue.parse(try await gateway.get("/api/styles").body)
            #expect(styles == .object(["styles": .array(["anime", "realistic"])]))
            try FileManager.default.removeItem(atPath: "\(gateway.workflowDirectory)/realistic.json")
            styles = try JSONValue.parse(try await gateway.get("/api/styles").body)
            #expect(styles == .object(["styles": .array(["anime"])]))
        }
    }

    @Test func changedStyleFileIsUsedByTheNextGeneration() async throws {
        try await withDrawingGateway("draw-reload") { gateway, _ in
            let client = try await DrawingClient.connect(port: gateway.port, sessionID: "reload")
            await client.sendSketch(Sketches.png(seed: 1))
            let first = try await client.next(status: "completed")
            #expect(try await result(gateway, "reload")?["texts"]?.arrayValue?.first == "a house on a hill")
            try Sketches.install(Sketches.style(text: "a castle at night"), as: "realistic", in: gateway)
            let count = await client.messages.count
            await client.sendSketch(Sketches.png(seed: 2))
            _ = try await client.next(status: "completed", after: count)
            #expect(try await result(gateway, "reload")?["texts"]?.arrayValue?.first == "a castle at night")
            _ = first
            await client.close()
        }
    }

    @Test func burstOfThirtyUpdatesEndsWithTheLastSketchAndFewPrompts() async throws {
        try await withDrawingGateway("draw-burst") { gateway, emulator in
            try await emulator.configure(["node_delay_ms": 15])
            let client = try await DrawingClient.connect(port: gateway.port, sessionID: "burst")
            let monitor = Task {
                var deepest = 0
                while !Task.isCancelled {
                    if let stats = try? await emulator.stats() {
                        let inFlight = (stats["queue_pending"]?.intValue ?? 0) + (stats["running"] == .null ? 0 : 1)
                        deepest = max(deepest, inFlight)
                    }
                    try? await Task.sleep(for: .milliseconds(5))
                }
                return deepest
            }
            for index in 0..<30 {
                await client.sendSketch(Sketches.png(seed: 100 + index))
                try await Task.sleep(for: .milliseconds(33))
            }
            let last = Digest.hex(Digest.sha256(Sketches.png(seed: 129)))
            try await waitUntil(timeout: .seconds(20)) {
                try await latestResult(gateway, "burst")?["image_sha256"] == .string(last)
            }
            monitor.cancel()
            let deepest = await monitor.value
            #expect(deepest <= 2, "prompts in ComfyUI for the session at once: \(deepest)")
            let executed = try await emulator.stats()["prompts_executed"]?.intValue ?? 0
            #expect(executed < 30, "stale sketches were skipped: \(executed) prompts for 30 updates")
            await client.close()
        }
    }

    @Test func craftedUploadsAreRefusedAndTheGatewayKeepsServing() async throws {
        try await withDrawingGateway("draw-crafted") { gateway, _ in
            // A part whose headers end right where the next delimiter starts (no CRLF between).
            let squeezed = Array("--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n--XyZ--\r\n".utf8)
            let response = try await gateway.post("/api/sketch", body: squeezed, contentType: "multipart/form-data; boundary=XyZ")
            #expect(response.status == 400)
            #expect(try JSONValue.parse(response.body)["error"]?["code"] == "invalid_request")
            // A boundary longer than RFC 2046 allows, over a body made of its own bytes.
            let long = String(repeating: "-", count: 199) + "x"
            let dashes = try await gateway.post("/api/sketch", body: Array(repeating: UInt8(ascii: "-"), count: 4 << 20), contentType: "multipart/form-data; boundary=\(long)")
            #expect(dashes.status == 400)
            for (file, reason) in [(Sketches.overflowHeader(), "pixels"), (Sketches.animated(), "animated")] {
                let form = sketchForm(file: file, fields: ["session_id": "crafted"])
                let refused = try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType)
                #expect(refused.status == 400)
                #expect(refused.bodyText.contains(reason), "\(refused.bodyText)")
            }
            let wordy = sketchForm(file: Sketches.png(seed: 2), fields: ["session_id": "crafted", "prompt": String(repeating: "a", count: 4001)])
            let tooLong = try await gateway.post("/api/sketch", body: wordy.body, contentType: wordy.contentType)
            #expect(tooLong.status == 400)
            #expect(tooLong.bodyText.contains("4000 characters"))
            // One Character ("e" and 5,000 combining accents) is 5,001 code points: refused too.
            let stacked = sketchForm(file: Sketches.png(seed: 2), fields: ["session_id": "crafted", "prompt": "e" + String(repeating: "\u{301}", count: 5000)])
            let stackedAnswer = try await gateway.post("/api/sketch", body: stacked.body, contentType: stacked.contentType)
            #expect(stackedAnswer.status == 400)
            #expect(stackedAnswer.bodyText.contains("4000 characters"))
            // Another site's page may not drive a painter's session (cross-site WebSocket hijacking).
            let upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
            let foreign = try await gateway.get("/api/ws/crafted", headers: upgrade + [("Origin", "https://evil.example")])
            #expect(foreign.status == 403)
            #expect(try JSONValue.parse(foreign.body)["error"]?["code"] == "forbidden")
            // The app is still the same process, serving.
            #expect(gateway.app.isRunning)
            let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": "crafted"])
            #expect(try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType).status == 200)
        }
    }

    @Test func sessionsBeyondMaxSessionsAreRefusedAsBusy() async throws {
        try await withGateway("draw-max", environment: ["MAX_SESSIONS": "2"]) { gateway, _ in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            for id in ["first", "second"] {
                let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": id])
                #expect(try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType).status == 200)
            }
            let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": "third"])
            let refused = try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType)
            #expect(refused.status == 429)
            #expect(refused.header("Retry-After") == "5")
            #expect(try JSONValue.parse(refused.body)["error"]?["code"] == "busy")
            // An existing session still takes sketches.
            let again = sketchForm(file: Sketches.png(seed: 2), fields: ["session_id": "first"])
            #expect(try await gateway.post("/api/sketch", body: again.body, contentType: again.contentType).status == 200)
            // A WebSocket for a new session hears why, and is closed rather than left unanswered.
            let socket = try await DrawingClient.connect(port: gateway.port, sessionID: "fourth")
            let busy = try await socket.next(status: "error")
            #expect(busy["message"]?.stringValue?.contains("busy") == true)
            await socket.close()
        }
    }

    @Test func oneClientAddressCannotFillMaxSessionsAndLockOthersOut() async throws {
        try await withGateway("draw-per-client", environment: ["MAX_SESSIONS": "10", "MAX_SESSIONS_PER_CLIENT": "2"]) { gateway, _ in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            // Two client addresses, as nginx sees them: loopback is all of 127.0.0.0/8.
            func sketch(_ session: String, from address: String) throws -> RawAnswer {
                let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": session])
                let head = "POST /api/sketch HTTP/1.1\r\nHost: 127.0.0.1:\(gateway.port)\r\nContent-Type: \(form.contentType)\r\n"
                    + "Content-Length: \(form.body.count)\r\nConnection: close\r\n\r\n"
                return try RawAnswer(port: gateway.port, request: Array(head.utf8) + form.body, from: address)
            }
            #expect(try sketch("one", from: "127.0.0.2").status == 200)
            #expect(try sketch("two", from: "127.0.0.2").status == 200)
            let third = try sketch("three", from: "127.0.0.2")
            #expect(third.status == 429, "\(String(decoding: third.body, as: UTF8.self))")
            #expect(try JSONValue.parse(third.body)["error"]?["message"]?.stringValue?.contains("from your address") == true)
            #expect(try sketch("one", from: "127.0.0.2").status == 200, "its open sessions still take sketches")
            // Another address still gets in, with 3 of MAX_SESSIONS' 10 places taken.
            #expect(try sketch("three", from: "127.0.0.3").status == 200)
            let painter = try await DrawingClient.connect(port: gateway.port, sessionID: "painter")
            await painter.sendSketch(Sketches.png(seed: 2))
            let completed = try await painter.next(status: "completed", "error")
            #expect(completed["status"] == "completed", "\(completed)")
            await painter.close()
        }
    }

    @Test func socketsOpenedAndClosedWithoutASketchLeaveNoSessionBehindUnderMaxSessions() async throws {
        try await withGateway("draw-blank", environment: ["MAX_SESSIONS": "2"]) { gateway, _ in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            func sessionCount() async throws -> Double? { try await drawingSessions(gateway) }
            let painter = try await DrawingClient.connect(port: gateway.port, sessionID: "painter")
            await painter.sendSketch(Sketches.png(seed: 1))
            _ = try await painter.next(status: "completed")
            await painter.close()
            // Many more blank sockets than MAX_SESSIONS, one after another: each leaves nothing.
            for index in 0..<4 {
                let visitor = try await DrawingClient.connect(port: gateway.port, sessionID: "visitor-\(index)")
                try await waitUntil { try await sessionCount() == 2 }
                await visitor.close()
                try await waitUntil { try await sessionCount() == 1 }
            }
            // So a new painter still gets in and gets a result, and the first one's is still there.
            let newcomer = try await DrawingClient.connect(port: gateway.port, sessionID: "newcomer")
            await newcomer.sendSketch(Sketches.png(seed: 2))
            let completed = try await newcomer.next(status: "completed", "error")
            #expect(completed["status"] == "completed", "\(completed)")
            #expect(try await latestResult(gateway, "painter")?["image_sha256"] == .string(Digest.hex(Digest.sha256(Sketches.png(seed: 1)))))
            // A session that took a sketch stays after its socket closes, and still counts.
            await newcomer.close()
            let third = sketchForm(file: Sketches.png(seed: 3), fields: ["session_id": "third"])
            #expect(try await gateway.post("/api/sketch", body: third.body, contentType: third.contentType).status == 429)
        }
    }

    @Test func sessionsHeldOnlyBySocketsMakeWayOldestFirstOnceTheirGraceIsOverWhenMaxSessionsAreOpen() async throws {
        try await withGateway("draw-make-way", environment: ["MAX_SESSIONS": "3", "SESSION_BLANK_GRACE": "4s"]) { gateway, _ in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            func open(_ session: String) throws -> RawConnection {
                let connection = try RawConnection(port: gateway.port)
                try connection.send("GET /api/ws/\(session) HTTP/1.1\r\nHost: 127.0.0.1:\(gateway.port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                #expect(try connection.receiveHead().status == 101)
                return connection
            }
            // A painter's session with a sketch, and two sockets that send nothing.
            let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": "painter"])
            #expect(try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType).status == 200)
            let oldest = try open("idle-1")
            try await Task.sleep(for: .milliseconds(100))
            let older = try open("idle-2")
            try await waitUntil { try await drawingSessions(gateway) == 3 }
            // Within their grace they keep their places.
            let early = try open("early")
            #expect(try early.nextText().contains("busy"))
            #expect(try early.closeCode() == 1013)
            // Room enough on a slow machine for the steps within a grace, before and after.
            try await Task.sleep(for: .milliseconds(4200))
            // Past it, a newcomer takes the oldest one's place; its socket hears why.
            let newcomer = try open("newcomer")
            #expect(try oldest.nextText().contains("make room"))
            #expect(try oldest.closeCode() == 1001)
            let next = try open("next")
            #expect(try older.nextText().contains("make room"))
            #expect(try older.closeCode() == 1001)
            // The newcomers are within their own grace, and the painter's session holds a sketch.
            let late = try open("late")
            #expect(try late.nextText().contains("busy"))
            try await waitUntil { try await latestResult(gateway, "painter") != nil }
            try newcomer.send(webSocketFrame(opcode: 0x1, payload: Array(#"{"type":"sketch_update","sketch_data":"\#(Data(Sketches.png(seed: 2)).base64EncodedString())"}"#.utf8)))
            #expect(try newcomer.nextText().contains("processing"))
            _ = next
        }
    }

    @Test func aCrashedAppsQueuedDrawingPromptIsRemovedFromComfyUIAtItsRestartWhileItsJobRunsOn() async throws {
        try await withGateway("draw-leftovers") { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            try await emulator.configure(["hang": true])
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "durable")))
            #expect(submitted.status == 202)
            let job = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue)
            let painter = try await DrawingClient.connect(port: gateway.port, sessionID: "left-behind")
            await painter.sendSketch(Sketches.png(seed: 1))
            try await waitUntil { try await emulator.stats()["queue_pending"] == 2 }
            // Which of the two queued prompts loads the painter's sketch.
            let queue = try JSONValue.parse(try await testHTTP.execute(CurlRequest(url: "\(emulator.url)/queue")).body)
            let pending = (queue["queue_pending"]?.arrayValue ?? []).compactMap(\.arrayValue).filter { $0.count >= 3 }
            func id(_ loadsSketch: Bool) -> String? {
                pending.first { String(decoding: $0[2].encoded(), as: UTF8.self).contains("/sketch-") == loadsSketch }?[1].stringValue
            }
            let drawing = try #require(id(true))
            let durable = try #require(id(false))

            kill(try gateway.appPID(), SIGKILL)
            await painter.close()
            try await waitUntil(timeout: .seconds(30)) { try await emulator.stats()["queue_deletes"]?.arrayValue?.contains(.string(drawing)) == true }
            #expect(try await emulator.stats()["queue_pending"] == 1)
            // The job's prompt is not taken for a leftover: the job is taken up again, and completes.
            #expect(try await emulator.stats()["queue_deletes"]?.arrayValue?.contains(.string(durable)) == false)
            try await emulator.configure(["hang": false])
            try await waitUntil(timeout: .seconds(30)) { try await gateway.job(job)["status"] == "completed" }
        }
    }

    @Test func sessionsUnderEverNewIdsReuseOneSketchFileInComfyUIsInputFolder() async throws {
        // ComfyUI has no delete for uploads: a file per session id a client picks would fill its disk.
        try await withGateway("draw-slots", environment: ["SESSION_IDLE_TIMEOUT": "1s"]) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            let uploads = "\(emulator.directory)/comfy/input/gateway"
            for (index, session) in ["first", "second", "third"].enumerated() {
                let painter = try await DrawingClient.connect(port: gateway.port, sessionID: session)
                await painter.sendSketch(Sketches.png(seed: 30 + index))
                let completed = try await painter.next(status: "completed", "error")
                #expect(completed["status"] == "completed", "\(completed)")
                // ComfyUI's LoadImage read this session's sketch.
                #expect(try await latestResult(gateway, session)?["image_sha256"] == .string(Digest.hex(Digest.sha256(Sketches.png(seed: 30 + index)))))
                await painter.close()
                // Dropped once idle; its result stays readable.
                try await waitUntil { try await drawingSessions(gateway) == 0 }
            }
            let files = try FileManager.default.contentsOfDirectory(atPath: uploads)
            #expect(files.count == 1 && files[0].hasPrefix("sketch-") && files[0].hasSuffix("-0.png"), "\(files)")
            #expect(FileManager.default.contents(atPath: "\(uploads)/\(files.first ?? "")").map(Array.init) == Sketches.png(seed: 32))
            // Two sessions open at once write two files, each its own sketch.
            let alice = try await DrawingClient.connect(port: gateway.port, sessionID: "alice")
            let bob = try await DrawingClient.connect(port: gateway.port, sessionID: "bob")
            await alice.sendSketch(Sketches.png(seed: 40))
            await bob.sendSketch(Sketches.png(seed: 41))
            #expect(try await alice.next(status: "completed", "error")["status"] == "completed")
            #expect(try await bob.next(status: "completed", "error")["status"] == "completed")
            #expect(try await latestResult(gateway, "alice")?["image_sha256"] == .string(Digest.hex(Digest.sha256(Sketches.png(seed: 40)))))
            #expect(try await latestResult(gateway, "bob")?["image_sha256"] == .string(Digest.hex(Digest.sha256(Sketches.png(seed: 41)))))
            #expect(try FileManager.default.contentsOfDirectory(atPath: uploads).count == 2)
            await alice.close()
            await bob.close()
        }
    }

    @Test func twoInterleavedSessionsGetTheirOwnResults() async throws {
        try await withDrawingGateway("draw-two") { gateway, emulator in
            try await emulator.configure(["node_delay_ms": 10])
            let alice = try await DrawingClient.connect(port: gateway.port, sessionID: "alice")
            let bob = try await DrawingClient.connect(port: gateway.port, sessionID: "bob")
            for round in 0..<3 {
                await alice.sendSketch(Sketches.png(seed: 10 + round))
                await bob.sendSketch(Sketches.png(seed: 20 + round))
            }
            try await waitUntil(timeout: .seconds(20)) {
                let aliceDone = try await latestResult(gateway, "alice")?["image_sha256"] == .string(Digest.hex(Digest.sha256(Sketches.png(seed: 12))))
                let bobDone = try await latestResult(gateway, "bob")?["image_sha256"] == .string(Digest.hex(Digest.sha256(Sketches.png(seed: 22))))
                return aliceDone && bobDone
            }
            // Each socket hears only about its own session.
            let aliceURLs = Set(await alice.messages.compactMap { $0["result_url"]?.stringValue })
            #expect(aliceURLs == ["/api/result/alice"])
            await alice.close()
            await bob.close()
        }
    }

    @Test func droppedClientReconnectsAndGetsTheNextResult() async throws {
        try await withDrawingGateway("draw-reconnect") { gateway, _ in
            let first = try await DrawingClient.connect(port: gateway.port, sessionID: "comeback")
            await first.sendSketch(Sketches.png(seed: 1))
            _ = try await first.next(status: "completed")
            await first.close()

            let second = try await DrawingClient.connect(port: gateway.port, sessionID: "comeback")
            await second.sendSketch(Sketches.png(seed: 2))
            let completed = try await second.next(status: "completed")
            #expect(completed["result_url"] == "/api/result/comeback")
            #expect(try await result(gateway, "comeback")?["image_sha256"] == .string(Digest.hex(Digest.sha256(Sketches.png(seed: 2)))))
            await second.close()
        }
    }

    @Test func seedStaysStableUntilTheClientAsksForANewOne() async throws {
        try await withDrawingGateway("draw-seed") { gateway, _ in
            let client = try await DrawingClient.connect(port: gateway.port, sessionID: "seeded")
            var seeds: [JSONValue] = []
            for (index, newSeed) in [false, false, true].enumerated() {
                if newSeed { await client.send(.object(["type": "new_seed"])) }
                let count = await client.messages.count
                await client.sendSketch(Sketches.png(seed: index), prompt: "prompt \(index)")
                _ = try await client.next(status: "completed", after: count)
                let metadata = try #require(try await result(gateway, "seeded"))
                #expect(metadata["texts"]?.arrayValue?.first == .string("prompt \(index)"))
                seeds.append(metadata["seeds"] ?? .null)
            }
            #expect(seeds[0] == seeds[1])
            #expect(seeds[1] != seeds[2])
            await client.close()
        }
    }

    @Test func previewsReachOnlyClientsThatAskedForThem() async throws {
        try await withDrawingGateway("draw-previews", emulatorArguments: ["--preview-method", "latent2rgb"]) { gateway, _ in
            let watcher = try await DrawingClient.connect(port: gateway.port, sessionID: "preview")
            let plain = try await DrawingClient.connect(port: gateway.port, sessionID: "preview")
            await watcher.send(.object(["type": "previews", "enabled": true]))
            try await Task.sleep(for: .milliseconds(100))
            await plain.sendSketch(Sketches.png(seed: 5))
            let preview = try await watcher.next(status: "preview")
            #expect(preview["image"]?.stringValue?.hasPrefix("data:image/jpeg;base64,") == true)
            _ = try await watcher.next(status: "completed")
            _ = try await plain.next(status: "completed")
            #expect(await plain.messages.allSatisfy { $0["status"] != "preview" })
            await watcher.close()
            await plain.close()
        }
    }

    @Test func badInputIsRefusedAndTheSessionKeepsItsLastGoodResult() async throws {
        try await withDrawingGateway("draw-bad") { gateway, emulator in
            let client = try await DrawingClient.connect(port: gateway.port, sessionID: "sturdy")
            await client.sendSketch(Sketches.png(seed: 1))
            _ = try await client.next(status: "completed")
            let good = try await gateway.get("/api/result/sturdy").body

            let truncated = Array(Sketches.png(seed: 2).dropLast(20))
            let badMessages: [(String, String)] = [
                ("not json", "JSON"),
                (#"{"type": "paint"}"#, "unknown message type"),
                (#"{"sketch_data": "abc"}"#, "type"),
                (#"{"type": "sketch_update", "sketch_data": "%%%not-base64%%%"}"#, "base64"),
                (#"{"type": "sketch_update", "sketch_data": "\#(Data("hello".utf8).base64EncodedString())"}"#, "not a usable image"),
                (#"{"type": "sketch_update", "sketch_data": "\#(Data(truncated).base64EncodedString())"}"#, "truncated"),
                (#"{"type": "sketch_update", "sketch_data": "\#(Data(Sketches.bombHeader()).base64EncodedString())"}"#, "pixels"),
                (#"{"type": "sketch_update", "style": "../x", "sketch_data": "\#(Data(Sketches.png(seed: 3)).base64EncodedString())"}"#, "style"),
                (#"{"type": "sketch_update", "style": "nope", "sketch_data": "\#(Data(Sketches.png(seed: 3)).base64EncodedString())"}"#, "unknown style"),
            ]
            for (raw, expected) in badMessages {
                let count = await client.messages.count
                await client.sendRaw(raw)
                let error = try await client.next(status: "error", after: count)
                #expect(error["message"]?.stringValue?.contains(expected) == true, "\(raw.prefix(60)): \(error)")
            }
            #expect(try await gateway.get("/api/result/sturdy").body == good)

            // The same checks over HTTP.
            for (file, fields, status) in [
                (Sketches.png(seed: 4), ["session_id": "bad id!"], 400),
                (Array("text".utf8), ["session_id": "sturdy"], 400),
                (Sketches.bombHeader(), ["session_id": "sturdy"], 400),
                (Sketches.png(seed: 4), ["session_id": "sturdy", "style": "../../etc"], 400),
            ] {
                let form = sketchForm(file: file, fields: fields)
                let response = try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType)
                #expect(response.status == status, "\(fields): \(response.bodyText)")
                #expect(try JSONValue.parse(response.body)["error"]?["code"] == "invalid_request")
            }
            let notMultipart = try await gateway.post("/api/sketch", body: Array("{}".utf8))
            #expect(notMultipart.status == 415)
            #expect(try await gateway.get("/api/result/bad%20id").status == 400)
            // nginx resolves the dots before routing and refuses a path above the root.
            let traversal = try await gateway.get("/api/result/..%2f..%2f..%2fetc%2fpasswd")
            #expect(traversal.status == 400)
            #expect(!traversal.bodyText.contains("root:"))
            let badSocket = try await gateway.get("/api/ws/bad%20id", headers: [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
            #expect(badSocket.status == 400)

            // After all that, the session still works.
            let count = await client.messages.count
            await client.sendSketch(Sketches.png(seed: 9))
            _ = try await client.next(status: "completed", after: count)
            #expect(try await result(gateway, "sturdy")?["image_sha256"] == .string(Digest.hex(Digest.sha256(Sketches.png(seed: 9)))))
            #expect((try await emulator.stats()["prompts_received"]?.intValue ?? 0) == 2)
            await client.close()
        }
    }
}
