import Comfy
import Foundation
import Testing

/// The durable job API through real nginx, FastCGI, the streaming listener, SQLite and the emulator.
@Suite(.serialized)
struct JobTests {
    @Test func asyncJobStreamsProgressThenCompletedAndItsImageBytes() async throws {
        try await withGateway("jobs-sse", emulatorArguments: ["--node-delay-ms", "100"]) { gateway, _ in
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "a lighthouse")))
            #expect(submitted.status == 202, "\(submitted.bodyText)")
            let job = try JSONValue.parse(submitted.body)
            let id = try #require(job["id"]?.stringValue)
            #expect(submitted.header("Location") == "/api/jobs/\(id)")
            #expect(job["status"] == "queued")

            let stream = try await gateway.get("/api/jobs/\(id)/events")
            #expect(stream.status == 200)
            #expect(stream.header("Content-Type")?.hasPrefix("text/event-stream") == true)
            let events = ServerSentEvents.parse(stream.bodyText)
            #expect(events.last?.name == "completed", "\(stream.bodyText)")
            let progress = events.dropLast().map { event in
                #expect(event.name == "progress")
                return event.data["progress"]?.doubleValue ?? -1
            }
            #expect(progress.count >= 3, "\(stream.bodyText)")
            #expect(progress == progress.sorted(), "progress only rises")

            let final = try #require(events.last?.data)
            let url = try #require(final["result"]?["url"]?.stringValue)
            let image = try await gateway.get(url)
            #expect(emulatorMetadata(ofPNG: image.body)?["texts"]?.arrayValue?.first == "a lighthouse")

            let stored = try await gateway.job(id)
            #expect(stored["status"] == "completed")
            #expect(stored["progress"] == 1)
            #expect(stored["queue_position"] == .null)
            #expect(stored["error"] == .null)
            #expect(stored["result"]?["url"]?.stringValue == url)
            #expect(stored["started_at"]?.stringValue != nil)
            #expect(stored["finished_at"]?.stringValue != nil)

            // A finished job's stream is its end alone.
            let again = ServerSentEvents.parse(try await gateway.get("/api/jobs/\(id)/events").bodyText)
            #expect(again.map(\.name) == ["completed"])
        }
    }

    @Test func eventsArriveThroughNginxAsTheyHappenWithHeartbeats() async throws {
        try await withGateway("jobs-stream", emulatorArguments: ["--node-delay-ms", "400"], environment: ["WS_PING_INTERVAL": "250ms"]) { gateway, _ in
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "streamed")))
            let id = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue)
            let port = gateway.port
            let arrivals = try await Task.detached { try streamedArrivals(port: port, path: "/api/jobs/\(id)/events") }.value
            let text = arrivals.map(\.text).joined()
            #expect(text.hasPrefix("HTTP/1.1 200"), "\(text.prefix(200))")
            #expect(text.contains(": heartbeat"), "idle proxies are kept from closing the stream")
            let firstProgress = try #require(arrivals.firstIndex { $0.text.contains("event: progress") })
            let completed = try #require(arrivals.firstIndex { $0.text.contains("event: completed") })
            // Not buffered by nginx: progress arrived in its own piece, well before the end.
            #expect(firstProgress < completed)
            #expect(arrivals[completed].at - arrivals[firstProgress].at > .milliseconds(500))
        }
    }

    @Test func unknownJobIdsAreNotFoundAsJSON() async throws {
        try await withGateway("jobs-404") { gateway, _ in
            for path in ["/api/jobs/\(UUID().uuidString.lowercased())", "/api/jobs/../../etc/passwd", "/api/jobs/x", "/api/jobs/\(UUID().uuidString.lowercased())/events"] {
                let response = try await gateway.get(path)
                #expect(response.status == 404, "\(path)")
                #expect(try JSONValue.parse(response.body)["error"]?["code"] == "not_found", "\(path)")
            }
            let delete = try await gateway.delete("/api/jobs/\(UUID().uuidString.lowercased())")
            #expect(delete.status == 404)
        }
    }

    @Test func aFailingJobKeepsTheSyncAPIsErrorObject() async throws {
        try await withGateway("jobs-fail") { gateway, _ in
            var workflow = Workflows.txt2img(text: "x")
            var sampler = workflow["3"]!["inputs"]!.objectValue!
            sampler["sampler_name"] = "no_such_sampler"
            workflow["3"] = Workflows.node("KSampler", sampler)
            let submitted = try JSONValue.parse(try await gateway.post("/api/jobs", json: Workflows.body(workflow)).body)
            let id = try #require(submitted["id"]?.stringValue)
            let events = ServerSentEvents.parse(try await gateway.get("/api/jobs/\(id)/events").bodyText)
            #expect(events.last?.name == "failed")
            let job = try await gateway.job(id)
            #expect(job["status"] == "failed")
            #expect(job["error"]?["code"] == "workflow_invalid")
            #expect(job["result"] == .null)
        }
    }

    @Test func webhookAnswered500TwiceIsDeliveredOnTheThirdAttemptSigned() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-webhook")
        let receiver = try WebhookReceiver(directory: directory, http: testHTTP)
        defer { receiver.stop() }
        try await withGateway("jobs-webhook", environment: Self.webhookSettings) { gateway, _ in
            let body = JSONValue.object([
                "workflow_data": .object(Workflows.txt2img(text: "hooked")), "output_node_id": "9", "webhook_url": .string(receiver.url("/fail/2")),
            ])
            let id = try #require(try JSONValue.parse(try await gateway.post("/api/jobs", json: body).body)["id"]?.stringValue)
            try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["webhook"]?["delivered_at"]?.stringValue != nil }
            let job = try await gateway.job(id)
            #expect(job["webhook"]?["attempts"] == 3)
            #expect(job["webhook"]?["last_status"] == 200)

            let deliveries = try await receiver.deliveries()
            #expect(deliveries.map { $0["answer"] } == [500, 500, 200])
            #expect(deliveries.allSatisfy { $0["verified"] == true }, "signatures checked with Python's hmac")
            #expect(Set(deliveries.compactMap { $0["id"]?.stringValue }).count == 1, "one webhook-id across retries")
            #expect(deliveries.allSatisfy { $0["content_type"] == "application/json" })
            #expect(deliveries.last?["body"]?["id"]?.stringValue == id)
            #expect(deliveries.last?["body"]?["status"] == "completed")
            #expect(deliveries.last?["body"]?["result"]?["url"]?.stringValue?.hasPrefix("/output_images/") == true)
        }
    }

    @Test func aHangingOrResettingReceiverHoldsUpNoOtherWebhook() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-hang")
        let receiver = try WebhookReceiver(directory: directory, http: testHTTP)
        defer { receiver.stop() }
        var settings = Self.webhookSettings
        settings["WEBHOOK_TIMEOUT"] = "1s"
        settings["WEBHOOK_MAX_ATTEMPTS"] = "2"
        try await withGateway("jobs-hang", environment: settings) { gateway, _ in
            var ids: [String: String] = [:]
            for path in ["/hang", "/reset", "/ok"] {
                let body = JSONValue.object(["workflow_data": .object(Workflows.txt2img(text: path)), "webhook_url": .string(receiver.url(path))])
                ids[path] = try JSONValue.parse(try await gateway.post("/api/jobs", json: body).body)["id"]?.stringValue
            }
            let ok = try #require(ids["/ok"])
            try await waitUntil(timeout: .seconds(20)) { try await gateway.job(ok)["webhook"]?["delivered_at"]?.stringValue != nil }
            for path in ["/hang", "/reset"] {
                let id = try #require(ids[path])
                // Two attempts, each ended by the timeout or the reset, then given up.
                try await waitUntil(timeout: .seconds(20)) { try await gateway.job(id)["webhook"]?["attempts"] == 2 }
                let job = try await gateway.job(id)
                #expect(job["webhook"]?["delivered_at"] == .null, "\(path)")
                #expect(job["webhook"]?["last_status"] == .null, "\(path)")
                #expect(job["status"] == "completed", "the job itself is unaffected")
            }
            try await waitUntil { try JSONValue.parse(try await gateway.get("/healthz").body)["job_store"]?["webhooks"]?["failed"] == 2 }
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            #expect(health["job_store"]?["jobs"]?["completed"] == 3)
            #expect(health["job_store"]?["webhooks"]?["delivered"] == 1)
            #expect((health["job_store"]?["size_bytes"]?.intValue ?? 0) > 0)
            let metrics = try await gateway.get("/metrics").bodyText
            #expect(metrics.contains(#"comfy_gateway_stored_jobs{status="completed"} 3"#), "\(metrics)")
            #expect(metrics.contains(#"comfy_gateway_stored_webhooks{state="failed"} 2"#))
            #expect(metrics.contains(#"comfy_gateway_webhook_deliveries_total{outcome="failed"} 2"#))
            #expect(metrics.contains(#"comfy_gateway_webhook_deliveries_total{outcome="delivered"} 1"#))
            #expect(metrics.contains("comfy_gateway_job_store_bytes"))
        }
    }

    @Test func receiversThatNeverAnswerHoldNoneOfTheThreadsComfyUICallsNeed() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-hang-many")
        let receiver = try WebhookReceiver(directory: directory, http: testHTTP)
        defer { receiver.stop() }
        var settings = Self.webhookSettings
        settings["WEBHOOK_TIMEOUT"] = "30s"
        try await withGateway("jobs-hang-many", environment: settings) { gateway, _ in
            // More hanging deliveries than the 32 threads that call ComfyUI, from ten keys: one
            // owner's deliveries take at most half of the webhook connections.
            var secrets: [String] = []
            for index in 0..<10 { secrets.append(try KeyTests.createKey(gateway, ["hanging-\(index)"])) }
            try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 }
            var ids: [(String, String)] = []
            for index in 0..<40 {
                let secret = secrets[index % secrets.count]
                let body = JSONValue.object(["workflow_data": .object(Workflows.txt2img(text: "hang \(index)")), "webhook_url": .string(receiver.url("/hang"))])
                let answer = try await gateway.post("/api/jobs", json: body, headers: KeyTests.bearer(secret))
                ids.append((try #require(try JSONValue.parse(answer.body)["id"]?.stringValue, "\(answer.status) \(answer.bodyText)"), secret))
            }
            try await waitUntil(timeout: .seconds(30)) { try await receiver.deliveries().count >= 8 }
            // ComfyUI is still reached while every webhook thread waits on the receiver...
            let generated = try await gateway.post(
                "/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "not held up")), headers: KeyTests.bearer(secrets[0])
            )
            #expect(generated.status == 200, "\(generated.bodyText)")
            #expect(emulatorMetadata(ofPNG: generated.body)?["texts"] == .array(["not held up", "text, watermark"]))
            // ... and before any of them ended: none waited for a delivery to time out.
            for (id, secret) in ids {
                #expect(try await gateway.job(id, headers: KeyTests.bearer(secret))["webhook"]?["attempts"] == 0, "\(id)")
            }
            #expect(try await receiver.deliveries().count == 8, "8 deliveries at once, the rest wait their turn")
        }
    }

    @Test func aCallerHangingUpOnKeyedGenerateCallsCannotFillTheQueue() async throws {
        try await withGateway("jobs-abandoned", environment: ["MAX_ABANDONED_JOBS_PER_CALLER": "2"]) { gateway, emulator in
            try await emulator.configure(["hang": true])
            // With a key a job outlives its call, for a retry to pick up: two of them here (the
            // backend holds both; the third waits in the gateway's queue).
            for index in 0..<3 {
                let body = Workflows.body(Workflows.txt2img(text: "held \(index)"))
                _ = try? await gateway.post("/api/generate", json: body, headers: [("Idempotency-Key", "held-\(index)")], timeout: .milliseconds(800))
            }
            try await waitUntil { try await emulator.stats()["prompts_received"] == 2 }
            // The third is cancelled once its caller has gone, as a call without a key is.
            try await waitUntil {
                try await gateway.get("/metrics").bodyText.split(separator: "\n").contains { $0.hasPrefix("comfy_gateway_jobs_total{") && $0.contains(#"outcome="cancelled""#) && $0.hasSuffix(" 1") }
            }
            #expect(try await emulator.stats()["prompts_received"] == 2, "it never reached ComfyUI")
            // The first two run on: retried, they give their results once ComfyUI runs them.
            try await emulator.configure(["hang": false])
            for index in 0..<2 {
                let retry = try await gateway.post(
                    "/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "held \(index)")), headers: [("Idempotency-Key", "held-\(index)")]
                )
                #expect(retry.status == 200, "\(retry.bodyText)")
                #expect(retry.header("Idempotent-Replayed") == "true")
            }
            // The gateway, not the caller, cancelled the third: its key names it no more (once its
            // end is stored), and a retry runs anew.
            try await waitUntil {
                let third = try await gateway.post(
                    "/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "held 2")), headers: [("Idempotency-Key", "held-2")]
                )
                guard third.status == 200 else { return false }
                #expect(third.header("Idempotent-Replayed") == nil)
                #expect(emulatorMetadata(ofPNG: third.body)?["texts"]?.arrayValue?.first?.stringValue == "held 2")
                return true
            }
        }
    }

    @Test func aQueuedJobsEventStreamFirstSaysItIsQueued() async throws {
        try await withGateway("jobs-sse-queued", environment: ["BACKEND_CAPACITY": "1"]) { gateway, emulator in
            try await emulator.configure(["hang": true])
            var ids: [String] = []
            for text in ["first", "second"] {
                let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: text)))
                ids.append(try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue))
            }
            try await waitUntil { try await gateway.job(ids[0])["status"] == "running" }
            #expect(try await gateway.job(ids[1])["status"] == "queued")
            // The stream stays open while the job waits: what arrived within two seconds.
            let arrived = try streamedArrivals(port: gateway.port, path: "/api/jobs/\(ids[1])/events", timeout: 2).map(\.text).joined()
            // Past the head, in its chunks: the first event's line.
            let event = try #require(arrived.firstRange(of: "event: "), "\(arrived)")
            let lines = arrived[event.lowerBound...].split(separator: "\n", maxSplits: 2)
            #expect(lines.first == "event: progress")
            let data = try JSONValue.parse(Array(lines[1].dropFirst("data: ".count).utf8))
            #expect(data["status"] == "queued", "\(arrived)")
        }
    }

    @Test func aJobsEndTheStoreRefusedIsWrittenAgainOnceItTakesItWithoutARestart() async throws {
        try await withGateway("jobs-unsettled", emulatorArguments: ["--node-delay-ms", "100"]) { gateway, emulator in
            let database = "\((gateway.runDirectory as NSString).deletingLastPathComponent)/state/jobs.sqlite"
            func sql(_ statement: String) throws {
                let python = try ChildProcess(
                    "/usr/bin/env", ["python3", "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()", database, statement],
                    logPath: "\(database).sql.log"
                )
                python.process.waitUntilExit()
            }
            // The end of a job cannot be written, as on a full disk; running it still can.
            try sql("CREATE TRIGGER no_room BEFORE UPDATE OF status ON jobs WHEN NEW.status NOT IN ('queued', 'running') BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "kept")))
            let id = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue)
            try await waitUntil(timeout: .seconds(30)) { gateway.app.log.contains("a job's end could not be stored") }
            #expect(try await gateway.job(id)["status"] == "running")
            try sql("DROP TRIGGER no_room")
            // Its end came before this cancel: the cancel writes that end, not its own.
            let cancel = try await gateway.get("/api/jobs/\(id)", method: "DELETE")
            #expect(cancel.status == 409, "\(cancel.bodyText)")
            try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["status"] == "completed" }
            let url = try #require(try await gateway.job(id)["result"]?["url"]?.stringValue)
            #expect(try await gateway.get(url).status == 200)
            #expect(try await emulator.stats()["prompts_received"] == 1, "not run again")
        }
    }

    @Test func aStoredJobWaitsForRoomWhenGenerateCallsFillTheBackendsLineInsteadOfFailing() async throws {
        try await withGateway("jobs-line-full", environment: ["BACKEND_CAPACITY": "1", "MAX_QUEUED_JOBS": "1"]) { gateway, emulator in
            try await emulator.configure(["hang": true])
            // One call runs, one waits in the line, which is then full: a third is refused.
            let calls = (0..<2).map { index in
                Task { try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "call \(index)", seed: index)), timeout: .seconds(60)) }
            }
            try await waitUntil { try await emulator.stats()["prompts_received"] == 1 }
            try await waitUntil { try await gateway.get("/metrics").bodyText.contains("comfy_gateway_queue_depth 1") }
            let third = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "third", seed: 9)), timeout: .seconds(5))
            #expect(third.status == 429, "\(third.bodyText)")
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "stored", seed: 7)))
            #expect(submitted.status == 202)
            let id = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue)
            let dropped = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "dropped", seed: 8)))
            let droppedID = try #require(try JSONValue.parse(dropped.body)["id"]?.stringValue)
            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await gateway.job(id)["status"] == "queued", "it waits, told it is stored")
            // Cancelled while it waits for room, whichever moment of its wait: it ends so.
            let cancelled = try await gateway.get("/api/jobs/\(droppedID)", method: "DELETE")
            #expect(cancelled.status == 200, "\(cancelled.bodyText)")
            #expect(try await gateway.job(droppedID)["status"] == "cancelled")
            try await emulator.configure(["hang": false])
            for call in calls { #expect(try await call.value.status == 200) }
            try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["status"] == "completed" }
        }
    }

    @Test func storedJobsWaitOutAComfyUIRestartAndRunWhenItIsBackWhileACallerOnTheLineIsTold503() async throws {
        try await withGateway("jobs-outage", emulatorArguments: ["--node-delay-ms", "300"], environment: ["BACKEND_FAILOVER_AFTER": "1s"]) { gateway, emulator in
            func submit(_ text: String, seed: Int) async throws -> String {
                let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: text, seed: seed)))
                #expect(submitted.status == 202, "\(submitted.bodyText)")
                return try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue)
            }
            // One job's prompt is running when ComfyUI dies; three more come while it is down.
            let running = try await submit("running", seed: 0)
            try await waitUntil { try await emulator.stats()["prompts_accepted"] == 1 }
            _ = emulator.process.stop(SIGKILL)
            var queued: [String] = []
            for index in 1...3 { queued.append(try await submit("queued \(index)", seed: index)) }
            // A generate call is answered at once once no backend has been up for the grace (3 s).
            let call = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "call", seed: 9)), timeout: .seconds(30))
            #expect(call.status == 503, "\(call.bodyText)")
            #expect(try JSONValue.parse(call.body)["error"]?["code"] == "backend_unavailable")
            try await Task.sleep(for: .seconds(1))
            // Past the grace, the stored jobs are not failed: they wait for a backend.
            #expect(try await gateway.job(running)["status"] == "running")
            for id in queued { #expect(try await gateway.job(id)["status"] == "queued") }
            let back = try Emulator(directory: emulator.directory, http: testHTTP, port: emulator.port)
            defer { back.stop() }
            for (id, text) in zip([running] + queued, ["running", "queued 1", "queued 2", "queued 3"]) {
                try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["status"]?.stringValue.flatMap(JobStatus.init)?.isFinal == true }
                let job = try await gateway.job(id)
                #expect(job["status"] == "completed", "\(job)")
                let image = try await gateway.get(try #require(job["result"]?["url"]?.stringValue))
                #expect(emulatorMetadata(ofPNG: image.body)?["texts"]?.arrayValue?.first?.stringValue == text)
            }
            #expect(try await back.stats()["prompts_accepted"] == 4, "each ran once on the ComfyUI that came back")
        }
    }

    @Test func aStoredJobNoBackendCameBackForWithinJobQueueTimeoutFailsBackendUnavailable() async throws {
        try await withGateway("jobs-outage-long", environment: ["JOB_QUEUE_TIMEOUT": "6s"]) { gateway, emulator in
            _ = emulator.process.stop(SIGKILL)
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "nobody", seed: 1)))
            let id = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue)
            // Past the 3 s after which a caller on the line is told, it still waits.
            try await Task.sleep(for: .seconds(4))
            #expect(try await gateway.job(id)["status"] == "queued")
            try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["status"] == "failed" }
            let job = try await gateway.job(id)
            #expect(job["error"]?["code"] == "backend_unavailable", "\(job)")
            #expect(job["error"]?["message"] == "no ComfyUI backend that can run this job is reachable")
        }
    }

    @Test func idempotencyKeysMakeRetriesTheSameJobOnAllThreeEndpoints() async throws {
        try await withGateway("jobs-idem") { gateway, emulator in
            let body = Workflows.body(Workflows.txt2img(text: "once only"))
            let first = try await gateway.post("/api/jobs", json: body, headers: [("Idempotency-Key", "order-1")])
            let second = try await gateway.post("/api/jobs", json: body, headers: [("Idempotency-Key", "order-1")])
            #expect(first.status == 202)
            #expect(second.status == 202)
            #expect(second.header("Idempotent-Replayed") == "true")
            let id = try JSONValue.parse(first.body)["id"]?.stringValue
            #expect(try JSONValue.parse(second.body)["id"]?.stringValue == id)

            let sync = Workflows.body(Workflows.txt2img(text: "sync once"))
            let a = try await gateway.post("/api/generate", json: sync, headers: [("Idempotency-Key", "sync-1")])
            let b = try await gateway.post("/api/generate", json: sync, headers: [("Idempotency-Key", "sync-1")])
            #expect(a.status == 200)
            #expect(b.status == 200)
            #expect(a.header("X-Job-Id") != nil)
            #expect(a.header("X-Job-Id") == b.header("X-Job-Id"))
            #expect(a.body == b.body)

            let file = Workflows.body(Workflows.txt2img(text: "file once"))
            let c = try await gateway.post("/api/generate_file", json: file, headers: [("Idempotency-Key", "file-1")])
            let d = try await gateway.post("/api/generate_file", json: file, headers: [("Idempotency-Key", "file-1")])
            #expect(c.status == 200)
            #expect(emulatorMetadata(ofPNG: d.body)?["texts"]?.arrayValue?.first == "file once")
            #expect(c.body == d.body)

            // Another body under a used key is refused, and nothing runs.
            let reused = try await gateway.post("/api/generate", json: file, headers: [("Idempotency-Key", "sync-1")])
            #expect(reused.status == 422)
            #expect(try JSONValue.parse(reused.body)["error"]?["code"] == "idempotency_key_reused")

            try await waitUntil { try await gateway.job(id ?? "")["status"] == "completed" }
            #expect(try await emulator.stats()["prompts_received"] == 3, "one prompt per key")
        }
    }

    @Test func aFormRetriedUnderItsIdempotencyKeyWithAnotherBoundaryIsTheSameJob() async throws {
        try await withGateway("jobs-idem-form") { gateway, emulator in
            let workflow = String(decoding: JSONValue.object(Sketches.style(text: "a form, once")).encoded(), as: UTF8.self)
            let fields = ["workflow_data": workflow, "output_node_id": "8"]
            // Each form gets a boundary of its own, as curl, requests and Dify give each call.
            let first = sketchForm(file: Sketches.png(seed: 41), fields: fields, fileField: "4")
            let retry = sketchForm(file: Sketches.png(seed: 41), fields: fields, fileField: "4")
            #expect(first.contentType != retry.contentType)
            let a = try await gateway.post("/api/generate", body: first.body, contentType: first.contentType, headers: [("Idempotency-Key", "form-1")])
            let b = try await gateway.post("/api/generate", body: retry.body, contentType: retry.contentType, headers: [("Idempotency-Key", "form-1")])
            #expect(a.status == 200, "\(a.bodyText)")
            #expect(b.status == 200, "\(b.bodyText)")
            #expect(b.header("Idempotent-Replayed") == "true")
            #expect(a.header("X-Job-Id") != nil)
            #expect(a.header("X-Job-Id") == b.header("X-Job-Id"))
            #expect(a.body == b.body)

            // Another file under the same key is another request.
            let other = sketchForm(file: Sketches.png(seed: 42), fields: fields, fileField: "4")
            let reused = try await gateway.post("/api/generate", body: other.body, contentType: other.contentType, headers: [("Idempotency-Key", "form-1")])
            #expect(reused.status == 422)
            #expect(try JSONValue.parse(reused.body)["error"]?["code"] == "idempotency_key_reused")
            #expect(try await emulator.stats()["prompts_received"] == 1, "one prompt for the key")
        }
    }

    @Test func aSyncCallerWithAKeyWhoseClientGaveUpGetsTheSameJobOnRetry() async throws {
        try await withGateway("jobs-idem-retry", emulatorArguments: ["--node-delay-ms", "250"]) { gateway, emulator in
            let body = Workflows.body(Workflows.txt2img(text: "slow but kept"))
            // The client gives up after 0.5 s; the job runs on because it carries a key.
            _ = try? await gateway.post("/api/generate", json: body, headers: [("Idempotency-Key", "retry-1")], timeout: .milliseconds(500))
            let retry = try await gateway.post("/api/generate", json: body, headers: [("Idempotency-Key", "retry-1")])
            #expect(retry.status == 200, "\(retry.bodyText)")
            #expect(retry.header("Idempotent-Replayed") == "true")
            let url = try #require(try JSONValue.parse(retry.body)["url"]?.stringValue)
            #expect(emulatorMetadata(ofPNG: try await gateway.get(url).body)?["texts"]?.arrayValue?.first == "slow but kept")
            let stats = try await emulator.stats()
            #expect(stats["prompts_received"] == 1)
            #expect(stats["interrupts"]?.arrayValue?.isEmpty == true)
        }
    }

    @Test func cancellingAQueuedAndARunningJob() async throws {
        try await withGateway("jobs-cancel", emulatorArguments: ["--node-delay-ms", "400"], environment: ["BACKEND_CAPACITY": "1"]) { gateway, emulator in
            var ids: [String] = []
            for index in 0..<2 {
                let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "cancel \(index)", seed: index)))
                ids.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue))
            }
            try await waitUntil { try await gateway.job(ids[0])["status"] == "running" }
            #expect(try await gateway.job(ids[1])["queue_position"] == 0)

            let queued = try await gateway.delete("/api/jobs/\(ids[1])")
            #expect(queued.status == 200, "\(queued.bodyText)")
            #expect(try JSONValue.parse(queued.body)["status"] == "cancelled")

            let running = try await gateway.delete("/api/jobs/\(ids[0])")
            #expect(running.status == 200, "\(running.bodyText)")
            #expect(try JSONValue.parse(running.body)["status"] == "cancelled")
            // Removed on ComfyUI by its prompt id, never by a global interrupt.
            try await waitUntil {
                let stats = try await emulator.stats()
                return (stats["queue_deletes"]?.arrayValue?.count ?? 0) + (stats["interrupts"]?.arrayValue?.count ?? 0) >= 1
            }
            let stats = try await emulator.stats()
            #expect(stats["interrupts"]?.arrayValue?.allSatisfy { $0["prompt_id"] != nil } == true)
            #expect(stats["prompts_received"] == 1, "the queued job never reached ComfyUI")

            let again = try await gateway.delete("/api/jobs/\(ids[0])")
            #expect(again.status == 409)
            #expect(try JSONValue.parse(again.body)["error"]?["code"] == "job_finished")
            let events = ServerSentEvents.parse(try await gateway.get("/api/jobs/\(ids[0])/events").bodyText)
            #expect(events.map(\.name) == ["cancelled"])
        }
    }

    @Test func asyncJobsPastMaxWaitingJobsAre429AndNotStoredButARetryOfAStoredOneIsThatJob() async throws {
        let environment = ["BACKEND_CAPACITY": "1", "MAX_WAITING_JOBS": "1"]
        try await withGateway("jobs-waiting", emulatorArguments: ["--hang"], environment: environment) { gateway, emulator in
            // ComfyUI runs nothing: two go to the backend's queue (twice its capacity), the third waits in the gateway.
            for index in 0..<3 {
                let answer = try await gateway.post(
                    "/api/jobs", json: Workflows.body(Workflows.txt2img(text: "wait \(index)", seed: index)), headers: [("Idempotency-Key", "wait-\(index)")]
                )
                #expect(answer.status == 202, "\(answer.bodyText)")
            }
            let refused = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "one too many", seed: 9)))
            #expect(refused.status == 429, "\(refused.bodyText)")
            #expect(refused.header("Retry-After") == "5")
            #expect(try JSONValue.parse(refused.body)["error"]?["code"] == "busy")
            #expect(refused.bodyText.contains("MAX_WAITING_JOBS"))
            // A retry of the waiting job is that job, not a refusal.
            let retry = try await gateway.post(
                "/api/jobs", json: Workflows.body(Workflows.txt2img(text: "wait 2", seed: 2)), headers: [("Idempotency-Key", "wait-2")]
            )
            #expect(retry.status == 202, "\(retry.bodyText)")
            #expect(retry.header("Idempotent-Replayed") == "true")
            // The store holds the three jobs, not the refused one.
            let directory = (gateway.runDirectory as NSString).deletingLastPathComponent
            let count = try ChildProcess(
                "/usr/bin/env", ["python3", "-c", "import sqlite3; print(sqlite3.connect('\(directory)/state/jobs.sqlite').execute('SELECT count(*) FROM jobs').fetchone()[0])"],
                logPath: "\(directory)/count.log"
            )
            count.process.waitUntilExit()
            #expect(count.log.trimmingCharacters(in: .whitespacesAndNewlines) == "3")
        }
    }

    static let webhookSettings = [
        "WEBHOOK_SECRET": WebhookReceiver.secret, "WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_RETRY_BASE": "50ms",
    ]
}

/// A text/event-stream body split into its events.
enum ServerSentEvents {
    struct Event {
        var name: String
        var data: JSONValue
    }

    static func parse(_ text: String) -> [Event] {
        text.components(separatedBy: "\n\n").compactMap { block in
            var name = "message"
            var data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data += line.dropFirst(6) }
            }
            guard !data.isEmpty, let value = try? JSONValue.parse(Array(data.utf8)) else { return nil }
            return Event(name: name, data: value)
        }
    }
}

/// What a restart, a crash or a full disk does to stored jobs.
@Suite(.serialized)
struct JobDurabilityTests {
    @Test func killingTheWholeGatewayLosesNoJobAndRunsNoPromptTwice() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-crash")
        let receiver = try WebhookReceiver(directory: directory, http: testHTTP)
        defer { receiver.stop() }
        let emulators = try (0..<2).map { index in
            let folder = "\(directory)/emulator-\(index)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            return try Emulator(directory: folder, http: testHTTP, arguments: ["--node-delay-ms", "150"])
        }
        defer { emulators.forEach { $0.stop() } }
        let environment = JobTests.webhookSettings
        let first = try Gateway(directory: directory, backends: emulators.map(\.url), http: testHTTP, environment: environment)
        // Killed below; should the test fail before, it must not leave a gateway running.
        defer { first.stop() }
        try await first.waitUntilHealthy()

        let receiverURL = receiver.url("/ok")
        let submitted = try await withThrowingTaskGroup(of: (String, String).self) { group in
            for index in 0..<20 {
                group.addTask {
                    let text = "survivor \(index)"
                    let body = JSONValue.object([
                        "workflow_data": .object(Workflows.txt2img(text: text, seed: index, output: "SaveImage")),
                        "output_node_id": "9",
                        "webhook_url": .string(receiverURL),
                    ])
                    let answer = try await first.post("/api/jobs", json: body)
                    guard answer.status == 202, let id = try JSONValue.parse(answer.body)["id"]?.stringValue else {
                        throw TestFailure("submit \(index): \(answer.status) \(answer.bodyText)")
                    }
                    return (id, text)
                }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        let texts: [String: String] = submitted
        #expect(texts.count == 20)
        // Some prompts running on ComfyUI, the rest queued in the gateway.
        try await waitUntil(timeout: .seconds(20)) {
            var received = 0
            for emulator in emulators { received += try await emulator.stats()["prompts_received"]?.intValue ?? 0 }
            return received >= 4
        }
        first.killEverything()
        let left = try ChildProcess(
            "/usr/bin/env", ["python3", "-c", "import sqlite3; print(' '.join(s for (s,) in sqlite3.connect('\(directory)/state/jobs.sqlite').execute(\"SELECT status FROM jobs WHERE status IN ('queued', 'running')\")))"],
            logPath: "\(directory)/left.log"
        )
        left.process.waitUntilExit()
        let unfinished = left.log.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(unfinished.contains("running") && unfinished.contains("queued"), "jobs were running and queued when killed: \(unfinished)")

        let second = try Gateway(directory: directory, backends: emulators.map(\.url), http: testHTTP, environment: environment)
        defer { second.stop() }
        try await second.waitUntilHealthy()
        try await waitUntil(timeout: .seconds(60)) {
            for id in texts.keys where try await second.job(id)["status"] != "completed" { return false }
            return true
        }
        for (id, text) in texts {
            let job = try await second.job(id)
            #expect(job["status"] == "completed", "\(id): \(job)")
            let url = try #require(job["result"]?["url"]?.stringValue)
            let image = try await second.get(url)
            #expect(emulatorMetadata(ofPNG: image.body)?["texts"]?.arrayValue?.first == .string(text), "each job has its own image")
        }
        var executed = 0
        for emulator in emulators { executed += try await emulator.stats()["prompts_executed"]?.intValue ?? 0 }
        #expect(executed == 20, "no prompt ran to completion twice")
        #expect(second.app.log.contains("took up the jobs the last gateway process left"))

        try await waitUntil(timeout: .seconds(30)) { Set(try await receiver.deliveries().compactMap { $0["id"]?.stringValue }).count == 20 }
        let deliveries = try await receiver.deliveries()
        #expect(Set(deliveries.compactMap { $0["id"]?.stringValue }) == Set(texts.keys), "every webhook arrives")
        #expect(deliveries.allSatisfy { $0["verified"] == true && $0["body"]?["status"] == "completed" })
    }

    /// A job whose prompt was running each time `JOB_CRASH_LIMIT` gateway processes died (as
    /// one that kills the gateway would be) is failed by the next start, not taken up again; a
    /// stop that hands it back does not count, nor does a death while a job's prompt still
    /// waited in ComfyUI's queue. The failed job's webhook tells its caller, and its prompt is
    /// interrupted; the one that waited behind it then runs and completes.
    @Test func aJobRunningEachTimeTheGatewayDiedCrashLimitTimesFailsAndAStopDoesNotCount() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-crash-limit")
        let receiver = try WebhookReceiver(directory: directory, http: testHTTP)
        defer { receiver.stop() }
        // 100 ms a sampler step: the first prompt (1000 steps) runs through every restart, and
        // the second waits behind it (ComfyUI runs one at a time).
        let emulator = try Emulator(directory: directory, http: testHTTP, arguments: ["--sampler-step-ms", "100"])
        defer { emulator.stop() }
        let environment = JobTests.webhookSettings.merging(["JOB_CRASH_LIMIT": "2", "WORKFLOW_MAX_STEPS": "1000"]) { $1 }
        func start() async throws -> Gateway {
            let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: environment)
            try await gateway.waitUntilHealthy()
            return gateway
        }
        func takenUp(_ gateway: Gateway) async throws {
            try await waitUntil(timeout: .seconds(20)) { gateway.app.log.contains("took up the jobs the last gateway process left") }
        }

        let first = try await start()
        defer { first.stop() }
        var long = Workflows.txt2img(text: "poison", seed: 1, output: "SaveImage")
        if case .object(var sampler) = long["3"], case .object(var inputs) = sampler["inputs"] {
            inputs["steps"] = 1000
            sampler["inputs"] = .object(inputs)
            long["3"] = .object(sampler)
        }
        let poison = try await first.post("/api/jobs", json: .object([
            "workflow_data": .object(long), "output_node_id": "9", "webhook_url": .string(receiver.url("/ok")),
        ]))
        let id = try #require(try JSONValue.parse(poison.body)["id"]?.stringValue, "\(poison.status) \(poison.bodyText)")
        let behind = try await first.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "innocent", seed: 2, output: "SaveImage")))
        let innocent = try #require(try JSONValue.parse(behind.body)["id"]?.stringValue, "\(behind.status) \(behind.bodyText)")
        try await waitUntil(timeout: .seconds(20)) {
            let stats = try await emulator.stats()
            return stats["queue_pending"] == 1 && stats["running"]?.stringValue != nil
        }
        #expect(first.stop() == 0)

        // Two deaths with the job running; the stop before them is not counted, or the third
        // start would fail it.
        for _ in 0..<2 {
            let next = try await start()
            defer { next.killEverything() }
            try await takenUp(next)
            #expect(try await next.job(id)["status"] == "running")
        }

        let last = try await start()
        defer { last.stop() }
        try await waitUntil(timeout: .seconds(20)) { try await last.job(id)["status"] == "failed" }
        let job = try await last.job(id)
        #expect(job["error"]?["code"] == "internal")
        #expect(job["error"]?["message"]?.stringValue?.contains("ended 2 times while this job ran") == true, "\(job)")
        #expect(last.app.log.contains("it is failed instead of being taken up again"))
        try await waitUntil(timeout: .seconds(20)) { !(try await receiver.deliveries().isEmpty) }
        let delivery = try #require(try await receiver.deliveries().first)
        #expect(delivery["body"]?["status"] == "failed" && delivery["verified"] == true, "\(delivery)")
        // Its prompt was interrupted; the one that waited behind it was not counted, and runs.
        try await waitUntil(timeout: .seconds(30)) { try await last.job(innocent)["status"] == "completed" }
        let stats = try await emulator.stats()
        #expect(stats["prompts_received"] == 2, "never submitted again")
        #expect(stats["interrupts"]?.arrayValue?.count == 1, "\(stats)")
    }

    /// A generate call without an `Idempotency-Key` ends with its caller, also in a crash: its
    /// prompt carries this `STATE_DIR`'s mark, and the restarted app removes it from ComfyUI's
    /// queue. A job's and a keyed call's prompts are taken up again, not removed.
    @Test func aCrashedAppsQueuedPromptOfACallWithoutAKeyIsRemovedFromComfyUIAtItsRestart() async throws {
        // Room on ComfyUI for all three prompts at once; images saved as files, which a prompt
        // taken up after the crash still finds (a WebSocket image went to the dead process).
        try await withGateway("jobs-leftover-call", emulatorArguments: ["--hang"], environment: ["BACKEND_CAPACITY": "3"]) { gateway, emulator in
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "durable", output: "SaveImage")))
            let job = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue, "\(submitted.status) \(submitted.bodyText)")
            let calls = [
                Task { try? await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "unkeyed", output: "SaveImage")), timeout: .seconds(10)) },
                Task {
                    try? await gateway.post(
                        "/api/generate", json: Workflows.body(Workflows.txt2img(text: "keyed", output: "SaveImage")), headers: [("Idempotency-Key", "kept")], timeout: .seconds(10)
                    )
                },
            ]
            defer { calls.forEach { $0.cancel() } }
            try await waitUntil { try await emulator.stats()["queue_pending"] == 3 }
            let queue = try JSONValue.parse(try await testHTTP.execute(CurlRequest(url: "\(emulator.url)/queue")).body)
            let pending = (queue["queue_pending"]?.arrayValue ?? []).compactMap(\.arrayValue).filter { $0.count >= 4 }
            let marked = pending.filter { $0[3]["comfy_gateway_leftover"]?.stringValue != nil }
            #expect(marked.count == 1, "only the call without a key is marked: \(pending.map { $0[3] })")
            let unkeyed = try #require(marked.first?[1].stringValue)
            #expect(String(decoding: try #require(marked.first?[2]).encoded(), as: UTF8.self).contains("unkeyed"))

            kill(try gateway.appPID(), SIGKILL)
            try await waitUntil(timeout: .seconds(30)) { try await emulator.stats()["queue_deletes"]?.arrayValue?.contains(.string(unkeyed)) == true }
            #expect(try await emulator.stats()["queue_pending"] == 2)
            #expect(try await emulator.stats()["queue_deletes"]?.arrayValue?.count == 1, "the job's and the keyed call's prompts stay")
            try await emulator.configure(["hang": false])
            try await waitUntil(timeout: .seconds(30)) { try await gateway.job(job)["status"] == "completed" }
            let retried = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "keyed", output: "SaveImage")), headers: [("Idempotency-Key", "kept")])
            #expect(retried.status == 200, "\(retried.bodyText)")
            let stats = try await emulator.stats()
            #expect(stats["prompts_received"] == 3, "nothing ran twice: \(stats)")
        }
    }

    /// The restarted gateway asks for the queue while the prompt runs, and the answer comes late,
    /// once the prompt has left the queue for the history. That prompt ran: it is read from the
    /// history, not called lost and submitted again.
    @Test func aReattachedPromptThatEndsWhileTheQueueIsReadIsNotSubmittedAgain() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-reattach-race")
        let emulator = try Emulator(directory: directory, http: testHTTP, arguments: ["--node-delay-ms", "400"])
        defer { emulator.stop() }
        let first = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { first.stop() }
        try await first.waitUntilHealthy()
        let body = JSONValue.object([
            "workflow_data": .object(Workflows.txt2img(text: "ran once", seed: 3, output: "SaveImage")), "output_node_id": "9",
        ])
        let answer = try await first.post("/api/jobs", json: body)
        let id = try #require(try JSONValue.parse(answer.body)["id"]?.stringValue, "\(answer.status) \(answer.bodyText)")
        try await waitUntil(timeout: .seconds(20)) { try await emulator.stats()["running"]?.stringValue != nil }
        first.killEverything()
        // Seven nodes of 400 ms: the prompt ends about 2.8 s after it started, long before this answer.
        try await emulator.configure(["queue_delay_ms": 6000])

        let second = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { second.stop() }
        try await second.waitUntilHealthy()
        try await waitUntil(timeout: .seconds(30)) { try await second.job(id)["status"] == "completed" }
        let image = try await second.get(try #require(try await second.job(id)["result"]?["url"]?.stringValue))
        #expect(emulatorMetadata(ofPNG: image.body)?["texts"]?.arrayValue?.first == "ran once")
        let stats = try await emulator.stats()
        #expect(stats["prompts_received"] == 1, "the prompt was not submitted again")
        #expect(stats["prompts_executed"] == 1)
        #expect(!second.app.log.contains("a resumed job's prompt is gone"))
        // Its events went to the killed process: its GPU time is read from ComfyUI's history
        // (seven nodes of 400 ms).
        let query = try ChildProcess(
            "/usr/bin/env", ["python3", "-c", "import sqlite3; print(sqlite3.connect('\(directory)/state/jobs.sqlite').execute(\"SELECT gpu_ms FROM jobs WHERE id = '\(id)'\").fetchone()[0])"],
            logPath: "\(directory)/gpu.log"
        )
        query.process.waitUntilExit()
        let gpu = Int(query.log.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(gpu.map { $0 >= 2500 } == true, "gpu_ms: \(query.log)")
    }

    /// A prompt the killed gateway left on a backend of capacity 1 holds that slot once taken
    /// up again: the next job's prompt reaches ComfyUI only after it ended.
    @Test func aPromptTakenUpAfterARestartHoldsItsSlotAndTheNextJobWaitsForIt() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-reattach-slot")
        // Slow nodes: the prompt must outlive the restart below by far on a loaded machine.
        let emulator = try Emulator(directory: directory, http: testHTTP, arguments: ["--node-delay-ms", "1500"])
        defer { emulator.stop() }
        let environment = ["BACKEND_CAPACITY": "1"]
        let first = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: environment)
        defer { first.stop() }
        try await first.waitUntilHealthy()
        // SaveImage: its file is in ComfyUI's history for the restarted gateway to read.
        func body(_ text: String, seed: Int) -> JSONValue {
            .object(["workflow_data": .object(Workflows.txt2img(text: text, seed: seed, output: "SaveImage")), "output_node_id": "9"])
        }
        let left = try await first.post("/api/jobs", json: body("left running", seed: 1))
        let leftID = try #require(try JSONValue.parse(left.body)["id"]?.stringValue, "\(left.bodyText)")
        try await waitUntil(timeout: .seconds(20)) { try await emulator.stats()["running"]?.stringValue != nil }
        first.killEverything()

        let second = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: environment)
        defer { second.stop() }
        try await second.waitUntilHealthy()
        // Taken up: the backend's one slot is in use.
        try await waitUntil(timeout: .seconds(10)) {
            try JSONValue.parse(try await second.get("/healthz").body)["backends"]?.arrayValue?.first?["in_flight"] == 1
        }
        try await emulator.configure(["node_delay_ms": 0])
        let next = try await second.post("/api/jobs", json: body("next", seed: 2))
        let nextID = try #require(try JSONValue.parse(next.body)["id"]?.stringValue, "\(next.bodyText)")
        for id in [leftID, nextID] { try await waitUntil(timeout: .seconds(30)) { try await second.job(id)["status"] == "completed" } }
        let executions = try JSONValue.parse(try await emulator.http.execute(CurlRequest(url: "\(emulator.url)/emulator/executions")).body)["executions"]?.arrayValue ?? []
        #expect(executions.count == 2, "\(executions)")
        let (leftEnd, nextArrival) = (try #require(executions.first?["end"]?.doubleValue), try #require(executions.last?["queued"]?.doubleValue))
        #expect(nextArrival >= leftEnd, "the next prompt was sent while the slot's prompt still ran: \(executions)")
    }

    @Test func jobsPastJobRetentionAreRemovedAndTheirImagesKept() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-retention")
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let first = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { first.stop() }
        try await first.waitUntilHealthy()
        let answer = try await first.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "old job")))
        let id = try #require(answer.header("X-Job-Id"))
        #expect(try await first.job(id)["status"] == "completed")
        #expect(first.stop() == 0)

        let second = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: ["JOB_RETENTION": "1ms"])
        defer { second.stop() }
        try await second.waitUntilHealthy()
        try await waitUntil { try await second.get("/api/jobs/\(id)").status == 404 }
        #expect(try second.storedFiles().filter { $0.hasSuffix(".png") }.count == 1, "images are OUTPUT_RETENTION's")
    }

    @Test func aQueuedJobsInputImageIsKeptPastJobRetentionUntilTheJobRuns() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-retention-inputs")
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        // The backend is down: the job waits in the store.
        try await emulator.configure(["http_status": 500, "refuse_ws": true])
        let first = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { first.stop() }
        try await first.waitUntilHealthy(503)
        let sketch = Sketches.png(seed: 78)
        var body = Workflows.body(Sketches.style(text: "kept input"), output: "8").objectValue!
        body["input_images"] = .object(["4": .string(Data(sketch).base64EncodedString())])
        let answer = try await first.post("/api/jobs", json: .object(body))
        let id = try #require(try JSONValue.parse(answer.body)["id"]?.stringValue, "\(answer.bodyText)")
        #expect(try await first.job(id)["status"] == "queued")
        #expect(first.stop() == 0)

        // An input of no job, two hours old: the sweep's removing it shows that the sweep ran.
        let inputs = "\(directory)/state/inputs"
        let orphan = "\(inputs)/\(String(repeating: "ab", count: 32)).png"
        try Data(Sketches.png(seed: 79)).write(to: URL(fileURLWithPath: orphan))
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-7200)], ofItemAtPath: orphan)

        // Started again with a retention far shorter than the job's wait: the sweep at start
        // must leave the input of the job still queued.
        let second = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: ["JOB_RETENTION": "1ms"])
        defer { second.stop() }
        try await second.waitUntilHealthy(503)
        try await waitUntil { !FileManager.default.fileExists(atPath: orphan) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: inputs).filter { $0.hasSuffix(".png") }.count == 1, "the queued job's input")
        try await emulator.configure(["http_status": .null, "refuse_ws": false])
        try await waitUntil(timeout: .seconds(30)) { try await second.job(id)["status"]?.stringValue.map { $0 != "queued" && $0 != "running" } ?? false }
        let job = try await second.job(id)
        #expect(job["status"] == "completed", "\(job)")
        let url = try #require(job["result"]?["url"]?.stringValue, "\(job)")
        #expect(emulatorMetadata(ofPNG: try await second.get(url).body)?["image_sha256"]?.stringValue == Digest.hex(Digest.sha256(sketch)))
    }

    @Test func whileTheAppIsDownNginxAnswers503WithRetryAfterAndTheSupervisorStartsItAgain() async throws {
        try await withGateway("jobs-app-down") { gateway, _ in
            let before = try String(contentsOfFile: "\(gateway.runDirectory)/app.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            // The supervisor is held still so that the window is long enough to look at.
            kill(gateway.app.pid, SIGSTOP)
            kill(try #require(Int32(before)), SIGKILL)
            try await Task.sleep(for: .milliseconds(200))
            for response in [try await gateway.get("/api/styles"), try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "x")))] {
                #expect(response.status == 503)
                #expect(response.header("Retry-After") == "1")
                #expect(response.header("Content-Type") == "application/json")
                #expect(try JSONValue.parse(response.body)["error"]?["code"] == "app_unavailable")
            }
            kill(gateway.app.pid, SIGCONT)
            try await gateway.waitUntilHealthy()
            let after = try String(contentsOfFile: "\(gateway.runDirectory)/app.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(after != before)
            #expect(gateway.app.log.contains("the app stopped; starting it again"))
            let job = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "after the restart")))
            #expect(job.status == 200)
        }
    }

    @Test func aDatabaseFromANewerGatewayStopsTheStartWithOneLine() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-newer")
        try FileManager.default.createDirectory(atPath: "\(directory)/state", withIntermediateDirectories: true)
        let python = try ChildProcess(
            "/usr/bin/env", ["python3", "-c", "import sqlite3; c = sqlite3.connect('\(directory)/state/jobs.sqlite'); c.execute('PRAGMA user_version = 99'); c.commit()"],
            logPath: "\(directory)/python.log"
        )
        python.process.waitUntilExit()
        let gateway = try Gateway(directory: directory, backends: ["http://127.0.0.1:9"], http: testHTTP)
        let status = gateway.app.waitForExit(within: .seconds(30))
        #expect(status == 78, "EX_CONFIG: not restarted")
        let lines = gateway.app.log.split(separator: "\n").filter { $0.contains("schema version 99") }
        #expect(lines.count == 1, "\(gateway.app.log)")
        #expect(lines.first?.contains("newer than this gateway's") == true)
    }

    @Test func aFullDiskAnswers503AndLeavesTheStoredJobsIntact() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("jobs-full")
        let state = "\(directory)/small-disk"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let mount = try ChildProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", state], logPath: "\(directory)/mount.log")
        mount.process.waitUntilExit()
        guard mount.process.terminationStatus == 0 else {
            // Mounting needs CAP_SYS_ADMIN; without it there is no disk to fill.
            Issue.record("cannot mount a tmpfs here: \(mount.log)")
            return
        }
        defer {
            let unmount = try? ChildProcess("/bin/umount", ["-l", state], logPath: "\(directory)/umount.log")
            unmount?.process.waitUntilExit()
        }
        try await withGateway("jobs-full", environment: ["STATE_DIR": state]) { gateway, _ in
            var accepted: [String] = []
            for index in 0..<3 {
                let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "before \(index)")))
                accepted.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue))
            }
            try await waitUntil { try await gateway.job(accepted[2])["status"] == "completed" }

            // Fill the disk.
            let filler = "\(state)/filler"
            _ = FileManager.default.createFile(atPath: filler, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: filler))
            while (try? handle.write(contentsOf: Data(count: 16 * 1024))) != nil {}
            try? handle.close()

            var refused: CurlResponse?
            for index in 0..<200 {
                let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "full \(index) " + String(repeating: "x", count: 2000))))
                if answer.status == 202 {
                    accepted.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue))
                    continue
                }
                refused = answer
                break
            }
            let answer = try #require(refused, "a full disk refuses jobs")
            #expect(answer.status == 503)
            #expect(try JSONValue.parse(answer.body)["error"]?["code"] == "store_unavailable")
            #expect(answer.header("Retry-After") != nil)
            let sync = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "sync " + String(repeating: "y", count: 4000))))
            #expect(sync.status == 503)

            // Space again: every job accepted before is there and ends; new ones are taken.
            try FileManager.default.removeItem(atPath: filler)
            let after = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "after")))
            #expect(after.status == 202, "\(after.bodyText)")
            accepted.append(try #require(try JSONValue.parse(after.body)["id"]?.stringValue))
            try await waitUntil(timeout: .seconds(30)) {
                for id in accepted where try await gateway.job(id)["status"] != "completed" { return false }
                return true
            }
            let integrity = try ChildProcess(
                "/usr/bin/env", ["python3", "-c", "import sqlite3; print(sqlite3.connect('\(state)/jobs.sqlite').execute('PRAGMA integrity_check').fetchone()[0])"],
                logPath: "\(directory)/integrity.log"
            )
            integrity.process.waitUntilExit()
            #expect(integrity.log.trimmingCharacters(in: .whitespacesAndNewlines) == "ok")
        }
    }
}
