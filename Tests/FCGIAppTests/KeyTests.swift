import Comfy
import Foundation
import Testing

/// API keys through the real parts: `FCGIApp keys` on the gateway's own STATE_DIR while it
/// runs, Bearer checks at nginx's door, jobs owned by their key, per-key limits and usage.
@Suite(.serialized)
struct KeyTests {
    /// Runs `FCGIApp keys ARGS` on the gateway's folder; returns its status and output.
    /// - Parameter environment: more settings (`JOB_STORE` for a shared store).
    static func keys(_ gateway: Gateway, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        let directory = (gateway.runDirectory as NSString).deletingLastPathComponent
        let process = try ChildProcess(
            TestPaths.gatewayBinary, ["keys"] + arguments,
            environment: ["STATE_DIR": "\(directory)/state", "RUN_DIR": gateway.runDirectory, "COMFYUI_SERVER": "http://127.0.0.1:9"].merging(environment) { $1 },
            directory: directory, logPath: "\(directory)/keys-\(UUID().uuidString.prefix(6)).log"
        )
        let status = process.stop(0, grace: .seconds(20))
        return (status, process.log)
    }

    /// A new key's secret (the last line `keys create` prints).
    static func createKey(_ gateway: Gateway, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let created = try keys(gateway, ["create"] + arguments, environment: environment)
        guard created.status == 0, let secret = created.output.split(separator: "\n").last.map(String.init), secret.hasPrefix("cgw_") else {
            throw TestFailure("keys create: \(created.output)")
        }
        return secret
    }

    static func bearer(_ secret: String) -> [(String, String)] { [("Authorization", "Bearer \(secret)")] }

    @Test func keysAreNeededOnceOneExistsAndARevokedKeyIsRefusedWithinASecond() async throws {
        try await withGateway("keys-auth") { gateway, _ in
            let body = Workflows.body(Workflows.txt2img(text: "k"))
            #expect(try await gateway.post("/api/generate", json: body).status == 200, "no keys yet: open")
            let secret = try Self.createKey(gateway, ["alice"])
            try await waitUntil { try await gateway.post("/api/generate", json: body).status == 401 }
            let refused = try await gateway.post("/api/jobs", json: body)
            #expect(refused.status == 401)
            #expect(refused.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
            #expect(try JSONValue.parse(refused.body)["error"]?["code"] == "unauthorized")
            #expect(try await gateway.post("/api/generate", json: body, headers: Self.bearer("cgw_wrong")).status == 401)
            #expect(try await gateway.post("/api/generate", json: body, headers: Self.bearer(secret)).status == 200)
            // The drawing API and the health check stay public.
            #expect(try await gateway.get("/api/styles").status == 200)
            #expect(try await gateway.get("/healthz").status == 200)

            let listed = try Self.keys(gateway, ["list"])
            #expect(listed.output.contains("alice\tactive"))
            #expect(!listed.output.contains(secret), "the secret is shown once, at creation")
            #expect(try Self.keys(gateway, ["create", "alice"]).status != 0, "a name is taken once")
            #expect(try Self.keys(gateway, ["revoke", "alice"]).status == 0)
            try await waitUntil(timeout: .seconds(3)) { try await gateway.post("/api/generate", json: body, headers: Self.bearer(secret)).status == 401 }
            #expect(!gateway.app.log.contains(secret), "no secret in a log line")
        }
    }

    @Test func revokingAKeyWithCancelEndsItsAcceptedJobsAndTheWaitingOnesNeverReachComfyUI() async throws {
        try await withGateway("keys-cancel") { gateway, emulator in
            // Its first job's prompt sits in ComfyUI's queue; the two others wait their turn here.
            try await emulator.configure(["hang": true])
            let alice = try Self.createKey(gateway, ["alice", "--max-running", "1"])
            try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 }
            var ids: [String] = []
            for index in 0..<3 {
                let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "queued \(index)")), headers: Self.bearer(alice))
                #expect(answer.status == 202, "\(answer.bodyText)")
                ids.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue))
            }
            try await waitUntil { try await emulator.stats()["prompts_received"] == 1 }

            let revoked = try Self.keys(gateway, ["revoke", "alice", "--cancel"])
            #expect(revoked.status == 0, "\(revoked.output)")
            #expect(revoked.output.contains("cancelled 3 of its queued and running jobs"), "\(revoked.output)")
            try await emulator.configure(["hang": false])
            try await waitUntil { try await emulator.stats()["prompts_executed"] == 1 }
            // The waiting ones start once the first ends, and stop before their prompt is sent.
            try await Task.sleep(for: .seconds(1))
            #expect(try await emulator.stats()["prompts_received"] == 1)
            let directory = (gateway.runDirectory as NSString).deletingLastPathComponent
            let stored = try ChildProcess(
                "/usr/bin/env", ["python3", "-c", "import sqlite3; print('\\n'.join(f'{s} {e}' for (s, e) in sqlite3.connect('\(directory)/state/jobs.sqlite').execute('SELECT status, error FROM jobs ORDER BY seq')))"],
                logPath: "\(directory)/jobs-cancelled.log"
            )
            #expect(stored.stop(0, grace: .seconds(10)) == 0)
            let lines = stored.log.split(separator: "\n")
            #expect(lines.count == 3 && lines.allSatisfy { $0.hasPrefix("cancelled ") && $0.contains("API key was revoked") }, "\(stored.log)")
            let again = try Self.keys(gateway, ["revoke", "alice", "--cancel"])
            #expect(again.status == 0 && again.output.contains("revoked already") && again.output.contains("cancelled 0 of"), "\(again.output)")
            #expect(try Self.keys(gateway, ["revoke", "alice"]).status == 1, "revoked once")
            #expect(try Self.keys(gateway, ["revoke", "nobody", "--cancel"]).status == 1)
        }
    }

    @Test func aKeySeesOnlyItsOwnJobs() async throws {
        try await withGateway("keys-own", emulatorArguments: ["--node-delay-ms", "100"]) { gateway, _ in
            let alice = try Self.createKey(gateway, ["alice"])
            let bob = try Self.createKey(gateway, ["bob"])
            try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 }
            let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "mine")), headers: Self.bearer(alice))
            let id = try #require(try JSONValue.parse(answer.body)["id"]?.stringValue)
            #expect(try await gateway.get("/api/jobs/\(id)", headers: Self.bearer(bob)).status == 404)
            #expect(try await gateway.get("/api/jobs/\(id)/events", headers: Self.bearer(bob)).status == 404)
            #expect(try await gateway.get("/api/jobs/\(id)/events").status == 401)
            #expect(try await gateway.http.execute(CurlRequest(method: "DELETE", url: gateway.baseURL + "/api/jobs/\(id)", headers: Self.bearer(bob))).status == 404)
            let events = ServerSentEvents.parse(try await gateway.get("/api/jobs/\(id)/events", headers: Self.bearer(alice)).bodyText)
            #expect(events.last?.name == "completed")
            // The same idempotency key under two keys is two jobs.
            let body = Workflows.body(Workflows.txt2img(text: "shared key"))
            let a = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(alice) + [("Idempotency-Key", "same")])
            let b = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(bob) + [("Idempotency-Key", "same")])
            #expect(try JSONValue.parse(a.body)["id"] != JSONValue.parse(b.body)["id"])
            #expect(b.header("Idempotent-Replayed") == nil)
        }
    }

    @Test func aKeyListsItsOwnJobsNewestFirstPageByPageAndByStatus() async throws {
        try await withGateway("keys-list", emulatorArguments: ["--node-delay-ms", "50"]) { gateway, emulator in
            // No keys yet: a job is found by its id alone, and there is no list to give.
            let keyless = try await gateway.get("/api/jobs")
            #expect(keyless.status == 404)
            #expect(try JSONValue.parse(keyless.body)["error"]?["code"] == "not_found")
            let alice = try Self.createKey(gateway, ["alice"])
            let bob = try Self.createKey(gateway, ["bob"])
            try await waitUntil { try await gateway.get("/api/jobs").status == 401 }
            var ids: [String] = []
            for index in 0..<3 {
                let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "alice \(index)", seed: index)), headers: Self.bearer(alice))
                ids.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue))
            }
            let call = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "alice call", seed: 7)), headers: Self.bearer(alice))
            #expect(call.status == 200)
            ids.append(try #require(call.header("X-Job-Id")))
            let bobs = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "bob")), headers: Self.bearer(bob))
            let bobsID = try #require(try JSONValue.parse(bobs.body)["id"]?.stringValue)
            for id in ids { try await waitUntil { try await gateway.job(id, headers: Self.bearer(alice))["status"] == "completed" } }

            let first = try JSONValue.parse(try await gateway.get("/api/jobs?limit=3", headers: Self.bearer(alice)).body)
            let cursor = try #require(first["next_cursor"]?.stringValue)
            let second = try JSONValue.parse(try await gateway.get("/api/jobs?limit=3&cursor=\(cursor)", headers: Self.bearer(alice)).body)
            #expect(second["next_cursor"] == .null)
            let listed = (first["jobs"]?.arrayValue ?? []) + (second["jobs"]?.arrayValue ?? [])
            #expect(listed.compactMap { $0["id"]?.stringValue } == ids.reversed(), "alice's four, newest first, bob's not among them")
            let generated = try #require(listed.first)
            #expect(generated["status"] == "completed")
            #expect(generated["result"]?["url"]?.stringValue != nil)
            #expect(generated["workflow_data"] == nil, "a job is listed as GET /api/jobs/{id} answers it")

            // Cancelled ones by status; two statuses at once.
            let cancelled = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "cancelled")), headers: Self.bearer(alice))
            try await emulator.configure(["hang": true])
            let cancelledID = try #require(try JSONValue.parse(cancelled.body)["id"]?.stringValue)
            _ = try await gateway.http.execute(CurlRequest(method: "DELETE", url: gateway.baseURL + "/api/jobs/\(cancelledID)", headers: Self.bearer(alice)))
            try await waitUntil { try await gateway.job(cancelledID, headers: Self.bearer(alice))["status"] == "cancelled" }
            let byStatus = try JSONValue.parse(try await gateway.get("/api/jobs?status=cancelled,queued", headers: Self.bearer(alice)).body)
            #expect(byStatus["jobs"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [cancelledID])
            let bobsList = try JSONValue.parse(try await gateway.get("/api/jobs", headers: Self.bearer(bob)).body)
            #expect(bobsList["jobs"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [bobsID])

            for (query, parameter) in [
                ("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("status=done", "status"), ("status=queued,", "status"),
                ("cursor=\(bobsID)", "cursor"), ("cursor=../x", "cursor"), ("cursor=%zz", "cursor"), ("status=%zz", "status"),
                ("status=queued&status=running", "status"), ("limit=5&limit=6", "limit"),
            ] {
                let refused = try await gateway.get("/api/jobs?\(query)", headers: Self.bearer(alice))
                #expect(refused.status == 400, "\(query)")
                let error = try JSONValue.parse(refused.body)["error"]
                #expect(error?["code"] == "invalid_parameter", "\(query)")
                #expect(error?["parameter"]?.stringValue == parameter, "\(query)")
            }
        }
    }

    @Test func perKeyQueueLimitsAndRatesAnswer429WithRetryAfter() async throws {
        try await withGateway("keys-limits", environment: ["INPUT_URL_ALLOW_PRIVATE": "true"]) { gateway, emulator in
            try await emulator.configure(["hang": true])
            let images = try ImageServer(directory: gateway.runDirectory, http: gateway.http)
            defer { images.stop() }
            let queued = try Self.createKey(gateway, ["queued", "--max-queued", "2"])
            let rated = try Self.createKey(gateway, ["rated", "--rate", "3/min"])
            let body = Workflows.body(Workflows.txt2img(text: "limited"))
            let first = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(queued) + [("Idempotency-Key", "queued-1")])
            #expect(first.status == 202)
            #expect(try await gateway.post("/api/jobs", json: body, headers: Self.bearer(queued)).status == 202)
            let full = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(queued))
            #expect(full.status == 429)
            #expect(full.header("Retry-After") != nil)
            #expect(try JSONValue.parse(full.body)["error"]?["code"] == "quota_exceeded")
            // A new job with a key of its own is refused too, before its input image is fetched;
            // a replay of a stored one is that job.
            var withImage = Workflows.txt2img(text: "limited")
            withImage["101"] = Workflows.node("LoadImage", ["image": "example.png"])
            var freshBody = Workflows.body(withImage).objectValue!
            freshBody["input_images"] = .object(["101": .string(images.url("/slow"))])
            let fresh = try await gateway.post("/api/jobs", json: .object(freshBody), headers: Self.bearer(queued) + [("Idempotency-Key", "queued-2")])
            #expect(fresh.status == 429)
            #expect(try JSONValue.parse(fresh.body)["error"]?["code"] == "quota_exceeded")
            #expect(try await images.requests().isEmpty, "refused before its image was fetched")
            let replay = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(queued) + [("Idempotency-Key", "queued-1")])
            #expect(replay.status == 202)
            #expect(replay.header("Idempotent-Replayed") == "true")
            #expect(try JSONValue.parse(replay.body)["id"] == JSONValue.parse(first.body)["id"])
            for _ in 0..<3 { #expect(try await gateway.post("/api/jobs", json: body, headers: Self.bearer(rated)).status == 202) }
            let fast = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(rated))
            #expect(fast.status == 429)
            #expect(try JSONValue.parse(fast.body)["error"]?["code"] == "rate_limited")
            #expect(Int(fast.header("Retry-After") ?? "") ?? 0 >= 1)
        }
    }

    @Test func aRetryUnderItsIdempotencyKeyIsItsStoredJobWithoutSpendingTheRateOrFetchingItsImagesAgain() async throws {
        try await withGateway("keys-replay", environment: ["INPUT_URL_ALLOW_PRIVATE": "true"]) { gateway, _ in
            let images = try ImageServer(directory: gateway.runDirectory, http: gateway.http)
            defer { images.stop() }
            let key = try Self.createKey(gateway, ["dify", "--rate", "2/min"])
            var workflow = Workflows.txt2img(text: "replayed")
            workflow["101"] = Workflows.node("LoadImage", ["image": "example.png"])
            var fields = Workflows.body(workflow).objectValue!
            // A presigned URL, say, that has expired by the time the caller retries.
            fields["input_images"] = .object(["101": .string(try images.serve(Sketches.png(seed: 5), as: "once.png"))])
            let body = JSONValue.object(fields)
            let generated = try await gateway.post("/api/generate", json: body, headers: Self.bearer(key) + [("Idempotency-Key", "gen-1")])
            #expect(generated.status == 200, "\(generated.bodyText)")
            let queued = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(key) + [("Idempotency-Key", "job-1")])
            #expect(queued.status == 202, "\(queued.bodyText)")
            try FileManager.default.removeItem(atPath: "\(images.directory)/once.png")

            let generatedAgain = try await gateway.post("/api/generate", json: body, headers: Self.bearer(key) + [("Idempotency-Key", "gen-1")])
            #expect(generatedAgain.status == 200, "\(generatedAgain.bodyText)")
            #expect(generatedAgain.header("Idempotent-Replayed") == "true")
            #expect(generatedAgain.header("X-Job-Id") == generated.header("X-Job-Id"))
            #expect(try JSONValue.parse(generatedAgain.body)["url"] == JSONValue.parse(generated.body)["url"])
            let queuedAgain = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(key) + [("Idempotency-Key", "job-1")])
            #expect(queuedAgain.status == 202, "\(queuedAgain.bodyText)")
            #expect(queuedAgain.header("Idempotent-Replayed") == "true")
            #expect(try JSONValue.parse(queuedAgain.body)["id"] == JSONValue.parse(queued.body)["id"])
            #expect(try await images.requests().filter { $0.hasSuffix("once.png") }.count == 2, "each image fetched once, by its first call")
            // Another request under a used key is still refused, and a new job still pays its way.
            let other = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "other")), headers: Self.bearer(key) + [("Idempotency-Key", "job-1")])
            #expect(other.status == 422)
            let fresh = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "fresh")), headers: Self.bearer(key))
            #expect(try JSONValue.parse(fresh.body)["error"]?["code"] == "rate_limited", "the two first calls spent the key's rate")
        }
    }

    @Test func maxRunningCapsAKeysPromptsAndOtherKeysTakeTurns() async throws {
        try await withGateway("keys-turns", emulatorArguments: ["--node-delay-ms", "80"], environment: ["BACKEND_CAPACITY": "2"]) { gateway, emulator in
            let big = try Self.createKey(gateway, ["big", "--max-running", "1"])
            let small = try Self.createKey(gateway, ["small"])
            var bigJobs: [String] = []
            for index in 0..<12 {
                let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "big \(index)", seed: index)), headers: Self.bearer(big))
                bigJobs.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue))
            }
            // The backend takes two prompts, but never holds two of big's at once.
            var mostInFlight = 0
            let sampleUntil = ContinuousClock.now + .milliseconds(600)  // short: big's jobs must still be waiting after it
            while ContinuousClock.now < sampleUntil {
                let health = try JSONValue.parse(try await gateway.get("/healthz").body)
                mostInFlight = max(mostInFlight, health["backends"]?.arrayValue?.first?["in_flight"]?.intValue ?? 0)
                try await Task.sleep(for: .milliseconds(30))
            }
            #expect(mostInFlight == 1)
            var smallJobs: [String] = []
            for index in 0..<2 {
                let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "small \(index)", seed: 100 + index)), headers: Self.bearer(small))
                smallJobs.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue))
            }
            try await waitUntil(timeout: .seconds(60)) {
                for id in bigJobs + smallJobs where try await gateway.job(id, headers: bigJobs.contains(id) ? Self.bearer(big) : Self.bearer(small))["status"] != "completed" { return false }
                return true
            }
            let executions = try JSONValue.parse(try await gateway.http.execute(CurlRequest(url: "\(emulator.url)/emulator/executions")).body)["executions"]?.arrayValue ?? []
            #expect(executions.count == 14)
            // The small key's two jobs did not wait behind the big key's twelve.
            var finished: [(String, String)] = []
            for id in bigJobs { finished.append((try await gateway.job(id, headers: Self.bearer(big))["finished_at"]?.stringValue ?? "", "big")) }
            for id in smallJobs { finished.append((try await gateway.job(id, headers: Self.bearer(small))["finished_at"]?.stringValue ?? "", "small")) }
            let order = finished.sorted { $0.0 < $1.0 }.map(\.1)
            let lastSmall = try #require(order.lastIndex(of: "small"))
            #expect(lastSmall < 8, "small's jobs ran in turn with big's: \(order)")
        }
    }

    @Test func usageCountsAKeysJobsGPUSecondsAndImageBytes() async throws {
        try await withGateway("keys-usage", emulatorArguments: ["--node-delay-ms", "50"]) { gateway, _ in
            let secret = try Self.createKey(gateway, ["counted"])
            try await waitUntil { try await gateway.post("/api/generate", json: .object([:])).status == 401 }
            let image = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "count me")), headers: Self.bearer(secret))
            #expect(image.status == 200)
            let usage = try JSONValue.parse(try await gateway.get("/api/usage", headers: Self.bearer(secret)).body)
            #expect(usage["key"] == "counted")
            #expect(usage["jobs"]?["completed"] == 1)
            #expect(usage["image_bytes"]?.intValue == image.body.count)
            #expect((usage["gpu_seconds"]?.doubleValue ?? 0) > 0.05, "\(usage)")
            let metrics = try await gateway.get("/metrics").bodyText
            #expect(metrics.contains(#"comfy_gateway_key_jobs_total{key="counted",outcome="completed"} 1"#) || metrics.contains(#"comfy_gateway_key_jobs_total{outcome="completed",key="counted"} 1"#), "\(metrics)")
            #expect(metrics.contains("comfy_gateway_key_image_bytes_total"))
        }
    }

    /// One `WEBHOOK_SECRET` for all keys would let a tenant who verifies its own deliveries sign
    /// one for another tenant's receiver: each key's deliveries carry a secret of its own.
    @Test func eachKeysWebhooksAreSignedWithASecretOnlyThatKeyIsGiven() async throws {
        try await withGateway("keys-webhooks", environment: JobTests.webhookSettings) { gateway, _ in
            let alice = try Self.createKey(gateway, ["alice"])
            let bob = try Self.createKey(gateway, ["bob"])
            try await waitUntil { try await gateway.get("/api/webhook_secret").status == 401 }
            let answer = try await gateway.get("/api/webhook_secret", headers: Self.bearer(alice))
            #expect(answer.status == 200, "\(answer.bodyText)")
            #expect(answer.header("Cache-Control") == "no-store")
            let aliceSecret = try #require(try JSONValue.parse(answer.body)["secret"]?.stringValue)
            let bobSecret = try #require(try JSONValue.parse(try await gateway.get("/api/webhook_secret", headers: Self.bearer(bob)).body)["secret"]?.stringValue)
            #expect(Set([aliceSecret, bobSecret, WebhookReceiver.secret]).count == 3)
            let printed = try Self.keys(gateway, ["webhook-secret", "alice"], environment: JobTests.webhookSettings)
            #expect(printed.status == 0)
            #expect(printed.output.split(separator: "\n").last.map(String.init) == aliceSecret, "the operator gets the same secret: \(printed.output)")
            #expect(try Self.keys(gateway, ["webhook-secret", "carol"], environment: JobTests.webhookSettings).status == 1)

            // Alice's receiver knows only her secret; Bob sends his job's webhook there too.
            let directory = (gateway.runDirectory as NSString).deletingLastPathComponent
            let receiver = try WebhookReceiver(directory: directory, http: testHTTP, secret: aliceSecret)
            defer { receiver.stop() }
            var owners: [String: String] = [:]
            for (secret, name) in [(alice, "alice"), (bob, "bob")] {
                let body = JSONValue.object([
                    "workflow_data": .object(Workflows.txt2img(text: name)), "output_node_id": "9", "webhook_url": .string(receiver.url("/ok")),
                ])
                let queued = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(secret))
                owners[try #require(try JSONValue.parse(queued.body)["id"]?.stringValue, "\(queued.status) \(queued.bodyText)")] = name
            }
            try await waitUntil(timeout: .seconds(20)) { try await receiver.deliveries().count == 2 }
            let deliveries = try await receiver.deliveries()
            let verified = Dictionary(uniqueKeysWithValues: deliveries.map { (owners[$0["id"]?.stringValue ?? ""] ?? "?", $0["verified"] == true) })
            #expect(verified == ["alice": true, "bob": false], "\(deliveries)")
            #expect(!gateway.app.log.contains(aliceSecret) && !gateway.app.log.contains(bobSecret), "no secret in a log line")
        }
    }

    /// Deliveries share 8 connections. A key alone has them all; once another key's webhook is
    /// due, each holds at most half, so the other's goes out at the first free connection
    /// instead of after every waiting delivery of the first.
    @Test func anotherKeysWebhookTakesTheFirstFreeConnectionFromAKeyWhoseReceiversHang() async throws {
        // Long enough for bob's job to run and its webhook to wait its turn while alice's hang.
        let settings = JobTests.webhookSettings.merging(["WEBHOOK_TIMEOUT": "6s"]) { $1 }
        try await withGateway("keys-webhook-share", environment: settings) { gateway, _ in
            let alice = try Self.createKey(gateway, ["alice"])
            let bob = try Self.createKey(gateway, ["bob"])
            try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 }
            let directory = (gateway.runDirectory as NSString).deletingLastPathComponent
            let receiver = try WebhookReceiver(directory: directory, http: testHTTP)
            defer { receiver.stop() }
            func submit(_ secret: String, _ text: String, webhook: String) async throws -> String {
                let body = JSONValue.object([
                    "workflow_data": .object(Workflows.txt2img(text: text)), "output_node_id": "9", "webhook_url": .string(receiver.url(webhook)),
                ])
                let answer = try await gateway.post("/api/jobs", json: body, headers: Self.bearer(secret))
                return try #require(try JSONValue.parse(answer.body)["id"]?.stringValue, "\(answer.status) \(answer.bodyText)")
            }
            var hanging: [String] = []
            for index in 0..<12 { hanging.append(try await submit(alice, "hang \(index)", webhook: "/hang")) }
            try await waitUntil(timeout: .seconds(30)) {
                for id in hanging where try await gateway.job(id, headers: Self.bearer(alice))["status"] != "completed" { return false }
                return true
            }
            // Alone, alice's deliveries take all 8 connections, and her other 4 wait.
            try await waitUntil { try await receiver.deliveries().count == 8 }

            let answered = try await submit(bob, "answered", webhook: "/ok")
            try await waitUntil(timeout: .seconds(20)) { try await receiver.deliveries().contains { $0["id"]?.stringValue == answered } }
            let arrivals = try await receiver.deliveries()
            #expect(
                arrivals.firstIndex { $0["id"]?.stringValue == answered } == 8,
                "bob's went at the first free connection, before alice's waiting ones: \(arrivals.map { $0["path"] ?? .null })"
            )
        }
    }

    /// The tool documents stay public for Dify's import, but a workflow's default values are
    /// its operator's prompts and settings: only a request with a key sees them once keys exist.
    @Test func publicToolDocumentsLeaveWorkflowDefaultsOutUnlessTheRequestHasAKey() async throws {
        try await withGateway("keys-tool-defaults") { gateway, _ in
            try Sketches.install(Workflows.txt2img(text: "the operator's own prompt"), as: "poster", in: gateway)
            func defaults(_ path: String, _ headers: [(String, String)] = []) async throws -> [String: JSONValue] {
                let answer = try await gateway.get(path, headers: headers)
                #expect(answer.status == 200)
                #expect(answer.header("Vary")?.contains("Authorization") == true)
                let properties = try JSONValue.parse(answer.body)["paths"]?["/api/workflows/poster/run"]?["post"]?["requestBody"]?["content"]?["application/json"]?["schema"]?["properties"]?.objectValue ?? [:]
                #expect(!properties.isEmpty, "\(path) lists the tool")
                return properties.filter { !["response_type", "output_format", "quality"].contains($0.key) }.compactMapValues { $0["default"] }
            }
            let open = try await defaults("/api/workflows/openapi.json")
            #expect(open.values.contains(.string("the operator's own prompt")), "no keys: nothing to withhold: \(open)")

            let secret = try Self.createKey(gateway, ["dify"])
            try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 }
            for path in ["/api/workflows/openapi.json", "/openapi.json"] {
                #expect(try await defaults(path).isEmpty, "\(path) without a key")
                #expect(try await defaults(path, [("Authorization", "Bearer cgw_wrong")]).isEmpty, "\(path) with a wrong key")
                #expect(try await defaults(path, Self.bearer(secret)) == open, "\(path) with the key")
            }
        }
    }
}
