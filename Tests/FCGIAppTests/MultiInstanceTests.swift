import Comfy
import Foundation
import PostgresCluster
import Testing

/// Several gateway instances (each a whole `make run`: supervisor, app, nginx) on one real
/// PostgreSQL job store, sharing two emulator backends and one output folder.
@Suite(.serialized)
struct MultiInstanceTests {
    struct Cluster {
        let gateways: [Gateway]
        let emulators: [Emulator]
        let receiver: WebhookReceiver
        let database: PostgresCluster
        let directory: String
        /// The first instance's network, when it runs in a namespace of its own.
        let namespace: NetworkNamespace?
    }

    /// The instances, backends and receiver for one test; stopped and removed after it. With
    /// `firstInNamespace`, the first instance runs in a network namespace, and the database,
    /// backends and receiver listen on this side's address of it.
    func withCluster(
        _ label: String, instances: Int = 2, emulatorArguments: [String] = ["--node-delay-ms", "20"], environment: [String: String] = [:],
        firstInNamespace: Bool = false, _ body: (Cluster) async throws -> Void
    ) async throws {
        let directory = try TestPaths.makeTemporaryDirectory(label)
        let namespace = firstInNamespace ? try NetworkNamespace(directory: directory) : nil
        defer { namespace?.remove() }
        let host = namespace?.hostAddress ?? "127.0.0.1"
        let database = try PostgresCluster(alsoListeningOn: namespace?.hostAddress)
        defer {
            // Kept with the test's files (which stay when it fails).
            try? FileManager.default.copyItem(atPath: "\(database.directory)/server.log", toPath: "\(directory)/postgres.log")
            database.stop()
        }
        let receiver = try WebhookReceiver(directory: directory, http: testHTTP, host: host)
        defer { receiver.stop() }
        let emulators = try (0..<2).map { index in
            let folder = "\(directory)/emulator-\(index)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            return try Emulator(directory: folder, http: testHTTP, arguments: emulatorArguments, host: host)
        }
        defer { emulators.forEach { $0.stop() } }
        var settings = JobTests.webhookSettings.merging([
            "JOB_STORE": database.url(host: host), "LEASE_TIMEOUT": "3s", "BACKEND_CAPACITY": "2",
            // One output folder for every instance (a shared volume), so each serves every image.
            "OUTPUT_DIR": "\(directory)/output",
        ]) { $1 }
        settings.merge(environment) { $1 }
        var gateways: [Gateway] = []
        defer { gateways.forEach { $0.stop() } }
        for index in 0..<instances {
            let folder = "\(directory)/instance-\(index)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            gateways.append(
                try Gateway(
                    directory: folder, backends: emulators.map(\.url), http: testHTTP, environment: settings, namespace: index == 0 ? namespace : nil
                )
            )
        }
        for gateway in gateways { try await gateway.waitUntilHealthy() }
        try await body(Cluster(gateways: gateways, emulators: emulators, receiver: receiver, database: database, directory: directory, namespace: namespace))
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Submits `count` async jobs round-robin over the instances; returns each job's id with its text.
    func submit(_ count: Int, to gateways: [Gateway], webhook: String, prefix: String) async throws -> [String: String] {
        try await withThrowingTaskGroup(of: (String, String).self) { group in
            for index in 0..<count {
                group.addTask {
                    let text = "\(prefix) \(index)"
                    let body = JSONValue.object([
                        "workflow_data": .object(Workflows.txt2img(text: text, seed: index, output: "SaveImage")),
                        "output_node_id": "9",
                        "webhook_url": .string(webhook),
                    ])
                    let answer = try await gateways[index % gateways.count].post("/api/jobs", json: body)
                    guard answer.status == 202, let id = try JSONValue.parse(answer.body)["id"]?.stringValue else {
                        throw TestFailure("submit \(index): \(answer.status) \(answer.bodyText)")
                    }
                    return (id, text)
                }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
    }

    /// Waits until every job is completed (asked of `gateway`), then checks each image's bytes,
    /// that no prompt ran twice, that no backend held more than its capacity, and that every
    /// webhook arrived once; or, where an instance died or was held up, at least once (one it
    /// sent but had not recorded is sent again by another, with the same `webhook-id`).
    ///
    /// `staleSends`: an instance held up (stopped, or its packets held) between the last look at
    /// its prompt's window and the bytes leaving can send that prompt after its job moved on.
    /// No sender can rule that out against a server that knows nothing of leases; the instance
    /// removes the prompt once it hears of the loss (checked: no prompt ran twice), but for that
    /// moment a backend may hold one more than its capacity.
    func expectEveryJobCompletedOnce(
        _ texts: [String: String], cluster: Cluster, through gateway: Gateway, webhooksAtLeastOnce: Bool = false, staleSends: Int = 0,
        timeout: Duration = .seconds(120)
    ) async throws {
        do {
            try await waitUntil(timeout: timeout) {
                for id in texts.keys where try await gateway.job(id)["status"] != "completed" { return false }
                return true
            }
        } catch {
            // Which jobs are left, and how, tells a stuck queue from failed jobs.
            var statuses: [String: Int] = [:]
            for id in texts.keys { statuses[try await gateway.job(id)["status"]?.stringValue ?? "?", default: 0] += 1 }
            Issue.record("not every job completed: \(statuses)")
            throw error
        }
        for (id, text) in texts {
            let job = try await gateway.job(id)
            let url = try #require(job["result"]?["url"]?.stringValue, "\(id): \(job)")
            let image = try await gateway.get(url)
            #expect(emulatorMetadata(ofPNG: image.body)?["texts"]?.arrayValue?.first == .string(text), "each job has its own image")
        }
        var executed = 0
        for emulator in cluster.emulators {
            let stats = try await emulator.stats()
            executed += stats["prompts_executed"]?.intValue ?? 0
            #expect((stats["max_in_flight"]?.intValue ?? 99) <= 2 + staleSends, "no backend held more than BACKEND_CAPACITY prompts from all instances: \(stats)")
            #expect((stats["prompts_executed"]?.intValue ?? 0) > 0, "both backends took jobs")
        }
        #expect(executed == texts.count, "no prompt ran twice")
        try await waitUntil(timeout: .seconds(60)) { Set(try await cluster.receiver.deliveries().compactMap { $0["id"]?.stringValue }).count >= texts.count }
        // The other instances' senders get a moment to send a duplicate, if they would.
        try await Task.sleep(for: .milliseconds(500))
        let deliveries = try await cluster.receiver.deliveries()
        if webhooksAtLeastOnce {
            // Only those under way when the instance stopped: a few of one batch at most.
            #expect(deliveries.count >= texts.count && deliveries.count <= texts.count + 64, "\(deliveries.count) deliveries for \(texts.count) jobs")
            let bodies = Dictionary(grouping: deliveries) { $0["id"]?.stringValue ?? "" }.mapValues { Set($0.compactMap { $0["body"] }) }
            #expect(bodies.values.allSatisfy { $0.count == 1 }, "a webhook sent again is the same")
        } else {
            #expect(deliveries.count == texts.count, "every webhook once: \(deliveries.count) deliveries for \(texts.count) jobs")
        }
        #expect(Set(deliveries.compactMap { $0["id"]?.stringValue }) == Set(texts.keys))
        #expect(deliveries.allSatisfy { $0["verified"] == true && $0["body"]?["status"] == "completed" })
    }

    /// Waits until the backends together have run `count` prompts (the load is under way).
    func waitUntilExecuted(_ count: Int, on cluster: Cluster) async throws {
        try await waitUntil(timeout: .seconds(30)) {
            var executed = 0
            for emulator in cluster.emulators { executed += try await emulator.stats()["prompts_executed"]?.intValue ?? 0 }
            return executed >= count
        }
    }

    @Test func twoInstancesShareTwoBackendsWithoutOverfillingThemAndRunEveryJobOnce() async throws {
        try await withCluster("multi-share") { cluster in
            let texts = try await submit(200, to: cluster.gateways, webhook: cluster.receiver.url("/ok"), prefix: "shared")
            #expect(texts.count == 200)
            try await expectEveryJobCompletedOnce(texts, cluster: cluster, through: cluster.gateways[1])
        }
    }

    @Test func anInstanceKilledMidLoadLosesNoJobAndRunsNoneTwice() async throws {
        try await withCluster("multi-kill", emulatorArguments: ["--node-delay-ms", "30"]) { cluster in
            // Slow to answer: the killed instance dies with deliveries under way, which the other sends again.
            let texts = try await submit(200, to: cluster.gateways, webhook: cluster.receiver.url("/slow/1500"), prefix: "survivor")
            try await waitUntilExecuted(20, on: cluster)
            cluster.gateways[0].killEverything()
            try await expectEveryJobCompletedOnce(texts, cluster: cluster, through: cluster.gateways[1], webhooksAtLeastOnce: true)
            #expect(cluster.gateways[1].app.log.contains("took over jobs whose gateway instance stopped renewing their lease"))
        }
    }

    @Test func aPausedInstanceThatLostItsLeaseDeliversNoSecondResult() async throws {
        try await withCluster("multi-pause", emulatorArguments: ["--node-delay-ms", "30"]) { cluster in
            let texts = try await submit(200, to: cluster.gateways, webhook: cluster.receiver.url("/ok"), prefix: "paused")
            try await waitUntilExecuted(20, on: cluster)
            let paused = try cluster.gateways[0].appPID()
            kill(paused, SIGSTOP)
            // Longer than LEASE_TIMEOUT: the other instance takes its jobs over.
            try await waitUntil(timeout: .seconds(30)) { cluster.gateways[1].app.log.contains("took over jobs whose gateway instance stopped renewing their lease") }
            try await Task.sleep(for: .seconds(2))
            kill(paused, SIGCONT)
            try await expectEveryJobCompletedOnce(texts, cluster: cluster, through: cluster.gateways[0], webhooksAtLeastOnce: true, staleSends: 1)
            try await waitUntil(timeout: .seconds(10)) { cluster.gateways[0].app.log.contains("another gateway instance took over jobs this one ran") }
        }
    }

    @Test(.enabled(if: NetworkNamespace.isAvailable, "needs root and iproute2 for a network namespace"))
    func anInstanceWhoseNetworkIsCutLosesItsJobsToTheOtherAndWorksAgainOnceMended() async throws {
        try await withCluster("multi-cut", emulatorArguments: ["--node-delay-ms", "30"], firstInNamespace: true) { cluster in
            let namespace = try #require(cluster.namespace)
            let texts = try await submit(100, to: cluster.gateways, webhook: cluster.receiver.url("/ok"), prefix: "cut")
            try await waitUntilExecuted(20, on: cluster)
            // Its packets are dropped: the database's and the backends' connections hang, new ones time out.
            try namespace.cut()
            try await waitUntil(timeout: .seconds(30)) { cluster.gateways[1].app.log.contains("took over jobs whose gateway instance stopped renewing their lease") }
            try await Task.sleep(for: .seconds(2))
            try namespace.mend()
            try await expectEveryJobCompletedOnce(texts, cluster: cluster, through: cluster.gateways[0], webhooksAtLeastOnce: true, staleSends: 1)
            try await waitUntil(timeout: .seconds(30)) { cluster.gateways[0].app.log.contains("another gateway instance took over jobs this one ran") }
            // Its connections came back: it takes and runs a new job.
            let body = JSONValue.object(["workflow_data": .object(Workflows.txt2img(text: "after the cut", seed: 7, output: "SaveImage")), "output_node_id": "9"])
            let answer = try await cluster.gateways[0].post("/api/generate", json: body)
            #expect(answer.status == 200, "\(answer.bodyText)")
            let url = try #require(try JSONValue.parse(answer.body)["url"]?.stringValue)
            let image = try await cluster.gateways[0].get(url)
            #expect(emulatorMetadata(ofPNG: image.body)?["texts"]?.arrayValue?.first == "after the cut")
        }
    }

    @Test func aCancelOnTheInstanceThatLostAWaitingJobsLeaseStillCancelsIt() async throws {
        try await withCluster("multi-cancel-lost") { cluster in
            let (a, b) = (cluster.gateways[0], cluster.gateways[1])
            for emulator in cluster.emulators { try await emulator.configure(["hang": true]) }
            // Four take the two backends' slots; the fifth waits in a's memory.
            var ids: [String] = []
            for index in 0..<5 {
                let submitted = try await a.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "lost \(index)", seed: index)))
                ids.append(try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue))
            }
            let waiting = try #require(ids.last)
            try await waitUntil { try await a.job(waiting)["status"] == "queued" }
            let paused = try a.appPID()
            kill(paused, SIGSTOP)
            try await waitUntil(timeout: .seconds(30)) { b.app.log.contains("took over jobs whose gateway instance stopped renewing their lease") }
            kill(paused, SIGCONT)
            try await waitUntil(timeout: .seconds(30)) { a.app.log.contains("another gateway instance took over jobs this one ran") }
            // Asked where it was submitted, the caller's cancel is a cancel, whoever holds the job now.
            let cancelled = try await a.get("/api/jobs/\(waiting)", method: "DELETE")
            #expect(cancelled.status == 200, "\(cancelled.bodyText)")
            #expect(try await b.job(waiting)["status"] == "cancelled")
        }
    }

    @Test func statusEventsAndCancelWorkFromTheOtherInstance() async throws {
        try await withCluster("multi-status", emulatorArguments: ["--node-delay-ms", "300"]) { cluster in
            let (a, b) = (cluster.gateways[0], cluster.gateways[1])
            let submitted = try await a.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "seen from b")))
            let id = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue)
            try await waitUntil { try await b.job(id)["status"] == "running" }

            // b streams the job a runs: its progress as a announces it, then its end.
            let events = ServerSentEvents.parse(try await b.get("/api/jobs/\(id)/events").bodyText)
            #expect(events.last?.name == "completed", "\(events.map(\.name))")
            #expect(events.contains { $0.name == "progress" })
            let url = try #require(events.last?.data["result"]?["url"]?.stringValue)
            #expect(emulatorMetadata(ofPNG: try await b.get(url).body)?["texts"]?.arrayValue?.first == "seen from b")

            // A job running on a is cancelled through b: removed on ComfyUI, and a stops it.
            let second = try await a.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "cancelled from b", seed: 2)))
            let secondID = try #require(try JSONValue.parse(second.body)["id"]?.stringValue)
            try await waitUntil { try await b.job(secondID)["status"] == "running" }
            let cancelled = try await b.delete("/api/jobs/\(secondID)")
            #expect(cancelled.status == 200, "\(cancelled.bodyText)")
            #expect(try JSONValue.parse(cancelled.body)["status"] == "cancelled")
            #expect(try await a.job(secondID)["status"] == "cancelled")
            try await waitUntil {
                var removed = 0
                for emulator in cluster.emulators {
                    let stats = try await emulator.stats()
                    removed += (stats["queue_deletes"]?.arrayValue?.count ?? 0) + (stats["interrupts"]?.arrayValue?.count ?? 0)
                }
                return removed >= 1
            }
            #expect(try await a.delete("/api/jobs/\(secondID)").status == 409)
            // The job stays cancelled: a's run, interrupted, does not overwrite it.
            try await Task.sleep(for: .seconds(1))
            #expect(try await b.job(secondID)["status"] == "cancelled")
        }
    }

    @Test func aBackendOneInstanceFindsHungIsAvoidedByTheOtherUntilItIsUpAgain() async throws {
        try await withCluster("multi-health", environment: ["BACKEND_STALL_TIMEOUT": "5s"]) { cluster in
            let (a, b) = (cluster.gateways[0], cluster.gateways[1])
            let (hung, healthy) = (cluster.emulators[0], cluster.emulators[1])
            func reportOnB() async throws -> JSONValue? {
                try JSONValue.parse(try await b.get("/healthz").body)["backends"]?.arrayValue?.first
            }
            // Hung: it takes prompts and runs none, yet answers its probes. Only a, with prompts
            // on it, can tell.
            try await hung.configure(["hang": true])
            let onA = Task { try await BackendPoolTests().generateConcurrently(a, count: 4, label: "moved") }
            try await waitUntil { try await hung.stats()["prompts_received"]?.intValue ?? 0 >= 1 }
            try await waitUntil(timeout: .seconds(30)) { try await reportOnB()?["reported_down"]?["instance"]?.stringValue != nil }
            let backend = try #require(try await reportOnB())
            #expect(backend["state"] == "down", "\(backend)")
            #expect(backend["reported_down"]?["reason"]?.stringValue?.contains("no progress") == true, "\(backend)")
            let receivedBefore = try await hung.stats()["prompts_received"]?.intValue

            // b, whose own probes find the backend fine, sends it nothing while a reports it.
            let onB = try await BackendPoolTests().generateConcurrently(b, count: 4, label: "avoided")
            for (index, result) in onB.enumerated() {
                #expect(result.status == 200, "job \(index): \(result.body)")
                #expect(result.text == "avoided-\(index)")
            }
            #expect(try await hung.stats()["prompts_received"]?.intValue == receivedBefore, "no prompt of b reached the backend a reported")
            for (index, result) in try await onA.value.enumerated() {
                #expect(result.status == 200, "job \(index) moved off the hung backend: \(result.body)")
                #expect(result.text == "moved-\(index)")
            }
            #expect(try await healthy.stats()["prompts_executed"]?.intValue == 8)

            // The stall over, a finds the backend up again and withdraws its report.
            try await waitUntil(timeout: .seconds(30)) { try await reportOnB()?["reported_down"] == .null }
            #expect(try await reportOnB()?["state"] == "up")
        }
    }

    @Test func aKeysRateAndItsCapOfRunningPromptsHoldOverEveryInstanceTogether() async throws {
        try await withCluster("multi-quota", emulatorArguments: ["--node-delay-ms", "40"], environment: ["BACKEND_CAPACITY": "3"]) { cluster in
            let (a, b) = (cluster.gateways[0], cluster.gateways[1])
            let store = ["JOB_STORE": cluster.database.url]
            let capped = try KeyTests.createKey(a, ["capped", "--max-running", "2"], environment: store)
            let limited = try KeyTests.createKey(a, ["limited", "--rate", "4/min"], environment: store)
            for gateway in [a, b] { try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 } }

            // Four a minute, spent from both instances.
            var statuses: [Int] = []
            var rated: [String] = []
            for index in 0..<8 {
                let body = Workflows.body(Workflows.txt2img(text: "rate \(index)", seed: index))
                let answer = try await cluster.gateways[index % 2].post("/api/jobs", json: body, headers: KeyTests.bearer(limited))
                statuses.append(answer.status)
                if answer.status == 202, let id = try JSONValue.parse(answer.body)["id"]?.stringValue { rated.append(id) }
            }
            #expect(statuses.filter { $0 == 202 }.count == 4, "\(statuses)")
            #expect(statuses.filter { $0 == 429 }.count == 4, "\(statuses)")
            try await waitUntil(timeout: .seconds(60)) {
                for id in rated where try await a.job(id, headers: KeyTests.bearer(limited))["status"] != "completed" { return false }
                return true
            }
            let cappedFrom = Date().timeIntervalSince1970

            // Twelve jobs over both instances, with six slots free: never more than two of them
            // queued or running on the backends together.
            var ids: [String] = []
            for index in 0..<12 {
                let body = Workflows.body(Workflows.txt2img(text: "capped \(index)", seed: 100 + index))
                let answer = try await cluster.gateways[index % 2].post("/api/jobs", json: body, headers: KeyTests.bearer(capped))
                ids.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue, "\(answer.bodyText)"))
            }
            try await waitUntil(timeout: .seconds(60)) {
                for id in ids where try await a.job(id, headers: KeyTests.bearer(capped))["status"] != "completed" { return false }
                return true
            }
            var spans: [(start: Double, end: Double)] = []
            for emulator in cluster.emulators {
                let executions = try JSONValue.parse(try await emulator.http.execute(CurlRequest(url: "\(emulator.url)/emulator/executions")).body)["executions"]?.arrayValue ?? []
                for execution in executions {
                    if let queued = execution["queued"]?.doubleValue, queued >= cappedFrom, let end = execution["end"]?.doubleValue { spans.append((queued, end)) }
                }
            }
            #expect(spans.count == 12, "each capped job ran once")
            // The most of them on the backends at once:
            var events: [(at: Double, step: Int)] = []
            for span in spans { events += [(span.start, 1), (span.end, -1)] }
            // An end and a start at one instant: the end first.
            events.sort { (left: (at: Double, step: Int), right: (at: Double, step: Int)) -> Bool in
                left.at == right.at ? left.step < right.step : left.at < right.at
            }
            var now = 0
            var most = 0
            for event in events {
                now += event.step
                most = max(most, now)
            }
            #expect(most == 2, "at most max_running prompts of the key on every backend together: \(most)")
        }
    }

    @Test func anAPIKeysIdempotencyKeyNamesOneJobOverEveryInstanceAndAnotherKeysIsItsOwn() async throws {
        try await withCluster("multi-idempotent") { cluster in
            let (a, b) = (cluster.gateways[0], cluster.gateways[1])
            let store = ["JOB_STORE": cluster.database.url]
            let alice = try KeyTests.createKey(a, ["alice"], environment: store)
            let bob = try KeyTests.createKey(a, ["bob"], environment: store)
            for gateway in [a, b] { try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 } }
            let body = Workflows.body(Workflows.txt2img(text: "once", seed: 7))
            var ids: [String] = []
            for (gateway, secret) in [(a, alice), (b, alice), (b, bob)] {
                let answer = try await gateway.post("/api/jobs", json: body, headers: KeyTests.bearer(secret) + [("Idempotency-Key", "order-1")])
                #expect([200, 202].contains(answer.status), "\(answer.bodyText)")
                ids.append(try #require(try JSONValue.parse(answer.body)["id"]?.stringValue, "\(answer.bodyText)"))
            }
            #expect(ids[0] == ids[1], "alice's key names her one job on either instance")
            #expect(ids[2] != ids[0], "bob's same key names a job of his own")
            for (id, secret) in [(ids[0], alice), (ids[2], bob)] {
                try await waitUntil(timeout: .seconds(30)) { try await b.job(id, headers: KeyTests.bearer(secret))["status"] == "completed" }
            }
            var prompts = 0
            for emulator in cluster.emulators { prompts += try await emulator.stats()["prompts_received"]?.intValue ?? 0 }
            #expect(prompts == 2, "one prompt per job")
        }
    }

    @Test func aQueuedJobsInputImageReachesTheInstanceThatTakesItOver() async throws {
        try await withCluster("multi-inputs", emulatorArguments: ["--node-delay-ms", "600"], environment: ["BACKEND_CAPACITY": "1"]) { cluster in
            let (a, b) = (cluster.gateways[0], cluster.gateways[1])
            // Both backends busy with a job of b's, which outlives a.
            for index in 0..<2 {
                let busy = try await b.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "busy \(index)", seed: index)))
                #expect(busy.status == 202)
            }
            for emulator in cluster.emulators { try await waitUntil { try await emulator.stats()["prompts_received"]?.intValue ?? 0 >= 1 } }
            // a accepts a job with an input image, which waits for a backend, and a dies.
            let sketch = Sketches.png(seed: 77)
            var body = Workflows.body(Sketches.style(text: "taken over"), output: "8").objectValue!
            body["input_images"] = .object(["4": .string(Data(sketch).base64EncodedString())])
            let answer = try await a.post("/api/jobs", json: .object(body))
            let id = try #require(try JSONValue.parse(answer.body)["id"]?.stringValue, "\(answer.bodyText)")
            #expect(try await a.job(id)["status"] == "queued")
            a.killEverything()

            // b takes it over and runs it with the image it was never sent.
            try await waitUntil(timeout: .seconds(60)) { try await b.job(id)["status"]?.stringValue.map { $0 != "queued" && $0 != "running" } ?? false }
            let job = try await b.job(id)
            #expect(job["status"] == "completed", "\(job)")
            let url = try #require(job["result"]?["url"]?.stringValue, "\(job)")
            #expect(emulatorMetadata(ofPNG: try await b.get(url).body)?["image_sha256"]?.stringValue == Digest.hex(Digest.sha256(sketch)))
        }
    }

    @Test func aPainterWhoseInstanceDiedGoesOnOnAnotherWithTheSameSeedLastResultAndToken() async throws {
        try await withCluster("multi-draw", environment: ["DRAWING_AUTH": "true"]) { cluster in
            let (a, b) = (cluster.gateways[0], cluster.gateways[1])
            for gateway in cluster.gateways { try Sketches.install(Sketches.style(), as: "realistic", in: gateway) }
            let painter = try KeyTests.createKey(a, ["painter"], environment: ["JOB_STORE": cluster.database.url])
            for gateway in [a, b] { try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 } }
            let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": "wanderer"])
            let uploaded = try await a.post("/api/sketch", body: form.body, contentType: form.contentType, headers: KeyTests.bearer(painter))
            #expect(uploaded.status == 200, "\(uploaded.bodyText)")
            let answer = try JSONValue.parse(uploaded.body)
            let (socketPath, resultPath) = (try #require(answer["websocket_url"]?.stringValue), try #require(answer["result_url"]?.stringValue))
            try await waitUntil { try await a.get(resultPath).status == 200 }
            let first = try await a.get(resultPath)
            let seeds = try #require(emulatorMetadata(ofPNG: first.body)?["seeds"])
            a.killEverything()

            // The page goes on with b, with the token a made: the last result is there at once,
            // and the next sketch keeps the seed.
            #expect(try await b.get("/api/result/wanderer").status == 401, "tokens are needed")
            let onB = try await b.get(resultPath)
            #expect(onB.status == 200)
            #expect(onB.body == first.body)
            let again = try await DrawingClient.connect(port: b.port, path: socketPath)
            await again.sendSketch(Sketches.png(seed: 2))
            _ = try await again.next(status: "completed")
            let second = try await b.get(resultPath)
            #expect(emulatorMetadata(ofPNG: second.body)?["seeds"] == seeds, "the session's seed")
            #expect(second.body != first.body, "a new result, of the new sketch")
            await again.close()
        }
    }

    /// Jobs waiting for a backend slot while the database is away for longer than a call's
    /// limit (5 s) wait on; they do not end `failed` with `store_unavailable`.
    @Test func jobsWaitingForASlotWhileTheDatabaseIsAwayWaitOnAndComplete() async throws {
        try await withCluster("multi-pg-away", instances: 1, emulatorArguments: ["--node-delay-ms", "300"], environment: ["BACKEND_CAPACITY": "1"]) { cluster in
            let gateway = cluster.gateways[0]
            let jobs = try await submit(6, to: [gateway], webhook: cluster.receiver.url("/ok"), prefix: "waiting")
            for emulator in cluster.emulators { try await waitUntil { try await emulator.stats()["prompts_received"]?.intValue ?? 0 >= 1 } }
            try cluster.database.kill()
            // Past one call's limit for the prompts that end meanwhile and for the slot waits behind them.
            try await Task.sleep(for: .seconds(12))
            try cluster.database.restart()
            try await waitUntil(timeout: .seconds(90)) {
                for id in jobs.keys where try await gateway.job(id)["status"]?.stringValue.map({ $0 == "queued" || $0 == "running" }) ?? true { return false }
                return true
            }
            for id in jobs.keys.sorted() {
                let job = try await gateway.job(id)
                #expect(job["status"] == "completed", "\(job)")
            }
        }
    }

    @Test func whileTheDatabaseIsDownCallsAnswer503AndAcceptedJobsCompleteAfter() async throws {
        try await withCluster("multi-pg-down", instances: 1, emulatorArguments: ["--node-delay-ms", "50"]) { cluster in
            let gateway = cluster.gateways[0]
            let before = try await submit(10, to: [gateway], webhook: cluster.receiver.url("/ok"), prefix: "before")
            try cluster.database.kill()
            let during = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "during")), timeout: .seconds(30))
            #expect(during.status == 503, "\(during.bodyText)")
            #expect(try JSONValue.parse(during.body)["error"]?["code"] == "store_unavailable")
            try cluster.database.restart()
            try await waitUntil(timeout: .seconds(60)) { try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "after"))).status == 202 }
            try await waitUntil(timeout: .seconds(90)) {
                for id in before.keys where try await gateway.job(id)["status"] != "completed" { return false }
                return true
            }
        }
    }
}

/// The app on TCP, as when nginx runs on another machine.
@Suite(.serialized)
struct TCPListenerTests {
    @Test func fastCGIAndTheStreamingListenerServeNginxOverTCP() async throws {
        let (fastCGI, streaming) = (TestPaths.freePort(), TestPaths.freePort())
        let environment = [
            "FCGI_SOCKET": "127.0.0.1:\(fastCGI)", "WS_SOCKET": "127.0.0.1:\(streaming)", "FCGI_WEB_SERVER_ADDRS": "127.0.0.1",
        ]
        try await withGateway("tcp-listeners", emulatorArguments: ["--node-delay-ms", "50"], environment: environment) { gateway, _ in
            // nginx reaches the app over TCP: a job through FastCGI, its events through the streaming listener.
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "over tcp")))
            #expect(submitted.status == 202, "\(submitted.bodyText)")
            let id = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue)
            let events = ServerSentEvents.parse(try await gateway.get("/api/jobs/\(id)/events").bodyText)
            #expect(events.last?.name == "completed")
            let url = try #require(events.last?.data["result"]?["url"]?.stringValue)
            #expect(emulatorMetadata(ofPNG: try await gateway.get(url).body)?["texts"]?.arrayValue?.first == "over tcp")
            #expect(!FileManager.default.fileExists(atPath: "\(gateway.runDirectory)/fcgi.sock"))
            // The streaming listener answers only FCGI_WEB_SERVER_ADDRS: another peer is hung up on.
            let upgrade = "GET /api/ws/direct HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"
            let stranger = try RawConnection(port: streaming, from: "127.0.0.2")
            try stranger.send(upgrade)
            #expect(stranger.receiveAll().isEmpty, "no answer to a peer the list leaves out")
            let listed = try RawConnection(port: streaming)
            try listed.send(upgrade)
            #expect(try listed.receiveHead().status == 101)
        }
    }

    @Test func aTCPListenerWithoutTheNginxHostsListedStopsStartUp() throws {
        let directory = try TestPaths.makeTemporaryDirectory("tcp-unlisted")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let app = try appRefusal(in: directory, ["FCGI_SOCKET": "127.0.0.1:\(TestPaths.freePort())", "FCGI_WEB_SERVER_ADDRS": ""])
        #expect(app.status == 78)
        #expect(app.log.hasPrefix("invalid configuration: FCGI_WEB_SERVER_ADDRS: FCGI_SOCKET or WS_SOCKET listens on TCP"), "\(app.log)")
    }
}
