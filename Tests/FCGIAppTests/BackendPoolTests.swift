import Comfy
import Foundation
import Testing

/// Several emulated ComfyUI backends behind one gateway: spreading, failover, backpressure,
/// shutdown and metrics, through real nginx and the real FastCGI socket.
@Suite(.serialized)
struct BackendPoolTests {
    /// Emulators in their own folders, and a gateway in front of all of them.
    struct Cluster {
        let directory: String
        var emulators: [Emulator]
        let gateway: Gateway

        func stop() {
            gateway.stop()
            for emulator in emulators { emulator.stop() }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    func startCluster(_ label: String, backends: Int, environment: [String: String] = [:], emulatorArguments: [[String]] = []) async throws -> Cluster {
        let directory = try TestPaths.makeTemporaryDirectory(label)
        var emulators: [Emulator] = []
        for index in 0..<backends {
            let folder = "\(directory)/backend-\(index)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            emulators.append(try Emulator(directory: folder, http: testHTTP, arguments: index < emulatorArguments.count ? emulatorArguments[index] : []))
        }
        var env = ["FCGI_THREADS": "256", "BACKEND_FAILOVER_AFTER": "1s", "BACKEND_PROBE_INTERVAL": "500ms"]
        env.merge(environment) { _, new in new }
        let gateway = try Gateway(directory: directory, backends: emulators.map(\.url), http: testHTTP, environment: env)
        let cluster = Cluster(directory: directory, emulators: emulators, gateway: gateway)
        do {
            try await gateway.waitUntilHealthy()
            // Every backend connected before the load starts.
            try await waitUntil {
                let health = try JSONValue.parse(try await gateway.get("/healthz").body)
                return health["backends"]?.arrayValue?.allSatisfy { $0["state"] == "up" } == true
            }
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    /// Sends `count` generate calls at once; returns each one's status and the prompt text in its image.
    func generateConcurrently(_ gateway: Gateway, count: Int, label: String) async throws -> [(status: Int, text: String?, body: String)] {
        try await withThrowingTaskGroup(of: (Int, Int, String?, String).self) { group in
            for index in 0..<count {
                group.addTask {
                    let response = try await gateway.post(
                        "/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "\(label)-\(index)", seed: index)), timeout: .seconds(90)
                    )
                    let text = emulatorMetadata(ofPNG: response.body)?["texts"]?.arrayValue?.first?.stringValue
                    return (index, response.status, text, response.status == 200 ? "" : response.bodyText)
                }
            }
            var results = Array(repeating: (status: 0, text: String?.none, body: ""), count: count)
            for try await (index, status, text, body) in group { results[index] = (status, text, body) }
            return results
        }
    }

    func executed(_ emulator: Emulator) async throws -> Int {
        try await emulator.stats()["prompts_executed"]?.intValue ?? -1
    }

    @Test func jobsLandOnlyOnBackendsWithTheirCheckpointAndAnUnknownModelIs400() async throws {
        let cluster = try await startCluster(
            "pool-models", backends: 2, emulatorArguments: [["--checkpoints", "anime.safetensors,shared.safetensors"], ["--checkpoints", "photo.safetensors,shared.safetensors"]]
        )
        defer { cluster.stop() }
        let gateway = cluster.gateway
        try await waitUntil {
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            return health["backends"]?.arrayValue?.allSatisfy { $0["models"]?["checkpoints"]?.arrayValue?.count == 2 } == true
        }
        func workflow(_ checkpoint: String, _ index: Int) -> JSONValue {
            var graph = Workflows.txt2img(text: "\(checkpoint) \(index)")
            graph["4"] = Workflows.node("CheckpointLoaderSimple", ["ckpt_name": .string(checkpoint)])
            return Workflows.body(graph)
        }
        try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<4 {
                for checkpoint in ["anime.safetensors", "photo.safetensors"] {
                    group.addTask { try await gateway.post("/api/generate", json: workflow(checkpoint, index)).status }
                }
            }
            for try await status in group { #expect(status == 200) }
        }
        #expect(try await cluster.emulators[0].stats()["prompts_accepted"] == 4)
        #expect(try await cluster.emulators[1].stats()["prompts_accepted"] == 4)

        for path in ["/api/generate", "/api/jobs"] {
            let unknown = try await gateway.post(path, json: workflow("missing.safetensors", 0))
            #expect(unknown.status == 400, "\(path): \(unknown.bodyText)")
            let error = try JSONValue.parse(unknown.body)["error"]
            #expect(error?["code"] == "model_not_found")
            #expect(error?["model"] == "missing.safetensors")
            #expect(error?["folder"] == "checkpoints")
            #expect(error?["available"] == .array(["anime.safetensors", "photo.safetensors", "shared.safetensors"]))
        }
        // A model both have runs on either; one job after another, the backend that ran it last
        // keeps it (it has it loaded), where equal backends would otherwise take turns.
        func accepted() async throws -> [Int] {
            var counts: [Int] = []
            for emulator in cluster.emulators { counts.append(try await emulator.stats()["prompts_accepted"]?.intValue ?? 0) }
            return counts
        }
        let before = try await accepted()
        for index in 0..<4 {
            #expect(try await gateway.post("/api/generate", json: workflow("shared.safetensors", 10 + index)).status == 200)
        }
        let after = try await accepted()
        let added = zip(after, before).map { $0 - $1 }
        #expect(added.sorted() == [0, 4], "\(added)")
        #expect(after.reduce(0, +) == 12)
    }

    @Test func hundredJobsSpreadEvenlyOverTwoEqualBackends() async throws {
        let cluster = try await startCluster("pool-spread", backends: 2)
        defer { cluster.stop() }
        for emulator in cluster.emulators { try await emulator.configure(["node_delay_ms": 10]) }
        let results = try await generateConcurrently(cluster.gateway, count: 100, label: "spread")
        for (index, result) in results.enumerated() {
            #expect(result.status == 200, "job \(index): \(result.body)")
            #expect(result.text == "spread-\(index)", "job \(index) got its own image")
        }
        let counts = [try await executed(cluster.emulators[0]), try await executed(cluster.emulators[1])]
        print("spread over two backends: \(counts)")
        #expect(counts.reduce(0, +) == 100)
        #expect(counts.allSatisfy { (40...60).contains($0) }, "\(counts)")
    }

    /// A backend (or a proxy before it) that answers the WebSocket upgrade with an error is
    /// asked again every few seconds: each refused connection is closed, not left open.
    @Test func aRefusedWebSocketUpgradeLeavesNoConnectionOpen() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("pool-ws-refused")
        let emulator = try Emulator(directory: directory, http: testHTTP, arguments: ["--refuse-ws"])
        defer { emulator.stop() }
        let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { gateway.stop() }
        try await gateway.waitUntilHealthy(503)
        try await waitUntil(timeout: .seconds(30)) { try await emulator.stats()["ws_refusals"]?.intValue ?? 0 >= 4 }
        // The last refusal may be a moment from its close.
        try await waitUntil(timeout: .seconds(5)) { try await emulator.stats()["ws_refused_open"]?.intValue ?? 99 <= 1 }
        #expect(gateway.app.isRunning)
    }

    @Test func killingOneOfTwoBackendsMidLoadLosesNoJob() async throws {
        var cluster = try await startCluster("pool-kill", backends: 2)
        defer { cluster.stop() }
        for emulator in cluster.emulators { try await emulator.configure(["node_delay_ms": 15]) }
        let (victim, gateway) = (cluster.emulators[0], cluster.gateway)
        let load = Task { try await generateConcurrently(gateway, count: 200, label: "kill") }
        try await Task.sleep(for: .seconds(1))
        let doneBeforeKill = try await executed(victim)
        victim.process.stop(SIGKILL)
        let results = try await load.value
        var ok = 0
        for (index, result) in results.enumerated() {
            #expect(result.status == 200, "job \(index): \(result.body)")
            #expect(result.text == "kill-\(index)", "job \(index) got its own image")
            if result.status == 200, result.text == "kill-\(index)" { ok += 1 }
        }
        let survivor = try await executed(cluster.emulators[1])
        print("200 jobs, one backend killed after 1 s: \(ok) right images; killed backend ran \(doneBeforeKill) before the kill, survivor ran \(survivor)")
        #expect(ok == 200)
        #expect(Set(results.compactMap(\.text)).count == 200, "no job answered twice or with another's image")
        let health = try JSONValue.parse(try await cluster.gateway.get("/healthz").body)
        #expect(health["backends"]?.arrayValue?[0]["state"] == "down")
        cluster.emulators.removeFirst()
    }

    @Test func jobsOnAHungBackendMoveToAnother() async throws {
        let cluster = try await startCluster("pool-hang", backends: 2, environment: ["BACKEND_STALL_TIMEOUT": "2s"])
        defer { cluster.stop() }
        let (hung, healthy) = (cluster.emulators[0], cluster.emulators[1])
        try await hung.configure(["hang": true])
        let results = try await generateConcurrently(cluster.gateway, count: 6, label: "hang")
        for (index, result) in results.enumerated() {
            #expect(result.status == 200, "job \(index): \(result.body)")
            #expect(result.text == "hang-\(index)")
        }
        #expect(try await executed(healthy) == 6)
        // Only our prompts were removed from the hung backend's queue; nothing was interrupted globally.
        let stats = try await hung.stats()
        #expect((stats["queue_deletes"]?.arrayValue?.count ?? 0) >= 1)
        #expect(stats["interrupts"]?.arrayValue?.allSatisfy { $0["prompt_id"] != nil } ?? true)
        #expect(cluster.gateway.app.log.contains("ComfyUI stalled"))
    }

    /// The only backend with a job's checkpoint goes down while another stays up: the job is
    /// answered 503 once the grace (3 s) is up, not after its whole timeout.
    @Test func aJobWhoseOnlyBackendsAreDownIs503WhileAnotherBackendIsUp() async throws {
        let cluster = try await startCluster(
            "pool-stranded", backends: 2, emulatorArguments: [["--checkpoints", "anime.safetensors"], ["--checkpoints", "photo.safetensors"]]
        )
        defer { cluster.stop() }
        let gateway = cluster.gateway
        try await waitUntil {
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            return health["backends"]?.arrayValue?.allSatisfy { $0["models"]?["checkpoints"]?.arrayValue?.count == 1 } == true
        }
        func workflow(_ checkpoint: String) -> JSONValue {
            var graph = Workflows.txt2img(text: checkpoint)
            graph["4"] = Workflows.node("CheckpointLoaderSimple", ["ckpt_name": .string(checkpoint)])
            return Workflows.body(graph)
        }
        // Models each on some backend, but on none together: no backend could ever run it.
        var apart = Workflows.txt2img(text: "apart")
        apart["4"] = Workflows.node("CheckpointLoaderSimple", ["ckpt_name": "anime.safetensors"])
        apart["10"] = Workflows.node("CheckpointLoaderSimple", ["ckpt_name": "photo.safetensors"])
        let refused = try await gateway.post("/api/generate", json: Workflows.body(apart), timeout: .seconds(60))
        #expect(refused.status == 400, "\(refused.bodyText)")
        #expect(try JSONValue.parse(refused.body)["error"]?["code"] == "model_not_found")

        try await cluster.emulators[0].configure(["http_status": 500, "refuse_ws": true])
        _ = try await cluster.emulators[0].http.execute(CurlRequest(method: "POST", url: "\(cluster.emulators[0].url)/emulator/restart"))
        try await waitUntil {
            try JSONValue.parse(try await gateway.get("/healthz").body)["backends"]?.arrayValue?.first?["state"] == "down"
        }
        // Waiting before the grace is up, or arriving after it: both answered, neither for 600 s.
        let stranded = try await gateway.post("/api/generate", json: workflow("anime.safetensors"), timeout: .seconds(60))
        #expect(stranded.status == 503, "\(stranded.bodyText)")
        let error = try JSONValue.parse(stranded.body)["error"]
        #expect(error?["code"] == "backend_unavailable")
        #expect(error?["message"] == "no ComfyUI backend that can run this job is reachable", "no address, no reasons: \(stranded.bodyText)")
        #expect(try await gateway.post("/api/generate", json: workflow("photo.safetensors")).status == 200, "the other backend works on")
        #expect(try await cluster.emulators[0].stats()["prompts_received"] == 0)
    }

    @Test func storedJobsOnlyADownBackendCanRunWaitOutsideTheLineWhileTheOtherRunsJobsAndRunWhenItIsBack() async throws {
        let cluster = try await startCluster(
            "pool-parked", backends: 2, environment: ["BACKEND_CAPACITY": "1", "JOB_QUEUE_TIMEOUT": "15s"],
            emulatorArguments: [["--checkpoints", "anime.safetensors"], ["--checkpoints", "photo.safetensors"]]
        )
        defer { cluster.stop() }
        let (gateway, anime) = (cluster.gateway, cluster.emulators[0])
        try await waitUntil {
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            return health["backends"]?.arrayValue?.allSatisfy { $0["models"]?["checkpoints"]?.arrayValue?.count == 1 } == true
        }
        func submit(_ checkpoint: String, _ index: Int) async throws -> String {
            var graph = Workflows.txt2img(text: "\(checkpoint) \(index)", seed: index)
            graph["4"] = Workflows.node("CheckpointLoaderSimple", ["ckpt_name": .string(checkpoint)])
            let answer = try await gateway.post("/api/jobs", json: Workflows.body(graph))
            #expect(answer.status == 202, "\(answer.bodyText)")
            return try #require(try JSONValue.parse(answer.body)["id"]?.stringValue)
        }
        func setDown(_ down: Bool) async throws {
            try await anime.configure(["http_status": down ? 500 : .null, "refuse_ws": .bool(down)])
            if down { _ = try await anime.http.execute(CurlRequest(method: "POST", url: "\(anime.url)/emulator/restart")) }
            try await waitUntil(timeout: .seconds(20)) {
                try JSONValue.parse(try await gateway.get("/healthz").body)["backends"]?.arrayValue?.first?["state"] == (down ? "down" : "up")
            }
        }
        try await setDown(true)
        // More of them than the runner hands the backends' line at once (1 slot × 2 backends × 2).
        var waiting: [String] = []
        for index in 0..<6 { waiting.append(try await submit("anime.safetensors", index)) }
        try await Task.sleep(for: .seconds(4))
        for id in waiting { #expect(try await gateway.job(id)["status"] == "queued", "past the 3 s after which a call is told 503") }
        // They hold none of the places: the other backend's jobs run meanwhile.
        var others: [String] = []
        for index in 0..<3 { others.append(try await submit("photo.safetensors", index)) }
        for id in others { try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["status"] == "completed" } }
        try await setDown(false)
        for id in waiting { try await waitUntil(timeout: .seconds(30)) { try await gateway.job(id)["status"] == "completed" } }
        #expect(try await executed(anime) == 6)

        // One whose backend stays away fails once its queue time is over.
        try await setDown(true)
        let late = try await submit("anime.safetensors", 9)
        try await waitUntil(timeout: .seconds(40)) { try await gateway.job(late)["status"] == "failed" }
        let error = try await gateway.job(late)["error"]
        #expect(error?["code"] == "backend_unavailable")
        #expect(error?["message"] == "no ComfyUI backend that can run this job came back within its queue time")
    }

    /// A GPU server frozen mid-job (it lost power, a NAT forgot the flow): its socket stays open
    /// and silent, and answers no ping. Its jobs move to the other backend once the ping goes
    /// unanswered, long before the stall timeout (180 s here).
    @Test func jobsOnABackendWhoseSocketAnswersNoPingMoveToAnother() async throws {
        let cluster = try await startCluster("pool-frozen", backends: 2, environment: ["BACKEND_PING_INTERVAL": "1s"])
        defer { cluster.stop() }
        let (frozen, healthy) = (cluster.emulators[0], cluster.emulators[1])
        for emulator in cluster.emulators { try await emulator.configure(["node_delay_ms": 300]) }
        let results = Task { try await generateConcurrently(cluster.gateway, count: 4, label: "frozen") }
        try await waitUntil { try await frozen.stats()["running"]?.stringValue != nil }
        kill(frozen.process.pid, SIGSTOP)
        defer { kill(frozen.process.pid, SIGCONT) }
        for (index, result) in try await results.value.enumerated() {
            #expect(result.status == 200, "job \(index): \(result.body)")
            #expect(result.text == "frozen-\(index)")
        }
        #expect(try await executed(healthy) >= 3, "the frozen backend's jobs ran on the other")
    }

    @Test func aLongSilentNodeIsNotAStall() async throws {
        let cluster = try await startCluster("pool-slow-node", backends: 2, environment: ["BACKEND_STALL_TIMEOUT": "1s"])
        defer { cluster.stop() }
        // Every node takes 1.5 s and says nothing meanwhile; ComfyUI's queue shows it running.
        for emulator in cluster.emulators { try await emulator.configure(["node_delay_ms": 1500]) }
        let results = try await generateConcurrently(cluster.gateway, count: 2, label: "slow")
        for (index, result) in results.enumerated() {
            #expect(result.status == 200, "job \(index): \(result.body)")
            #expect(result.text == "slow-\(index)")
        }
        #expect(!cluster.gateway.app.log.contains("ComfyUI stalled"))
        var executed = 0
        for emulator in cluster.emulators {
            executed += try await self.executed(emulator)
            #expect(try await emulator.stats()["queue_deletes"]?.arrayValue?.isEmpty == true, "nothing was removed")
        }
        #expect(executed == 2, "each job ran once")
    }

    @Test func backendAnswering500IsLeftForAHealthyOne() async throws {
        let cluster = try await startCluster("pool-500", backends: 2)
        defer { cluster.stop() }
        let (failing, healthy) = (cluster.emulators[0], cluster.emulators[1])
        try await failing.configure(["http_status": 500])
        let results = try await generateConcurrently(cluster.gateway, count: 8, label: "five-hundred")
        for (index, result) in results.enumerated() {
            #expect(result.status == 200, "job \(index): \(result.body)")
            #expect(result.text == "five-hundred-\(index)")
        }
        #expect(try await executed(healthy) == 8)
        try await waitUntil {
            let health = try JSONValue.parse(try await cluster.gateway.get("/healthz").body)
            return health["backends"]?.arrayValue?[0]["state"] == "down"
        }
    }

    @Test func backendRestartedWithAnEmptyQueueRunsItsJobsAgain() async throws {
        var cluster = try await startCluster("pool-restart", backends: 1, environment: ["BACKEND_FAILOVER_AFTER": "20s"])
        defer { cluster.stop() }
        let (first, gateway) = (cluster.emulators[0], cluster.gateway)
        try await first.configure(["node_delay_ms": 300])
        let load = Task { try await generateConcurrently(gateway, count: 3, label: "restart") }
        try await waitUntil { try await first.stats()["prompts_accepted"]?.intValue ?? 0 >= 2 }
        first.process.stop(SIGKILL)
        let second = try Emulator(directory: first.directory, http: testHTTP, port: first.port)
        cluster.emulators[0] = second
        let results = try await load.value
        for (index, result) in results.enumerated() {
            #expect(result.status == 200, "job \(index): \(result.body)")
            #expect(result.text == "restart-\(index)")
        }
        #expect(try await executed(second) == 3)
        #expect(cluster.gateway.app.log.contains("ComfyUI lost a prompt; submitting it again"))
    }

    @Test func fullQueueAnswers429WithRetryAfter() async throws {
        let cluster = try await startCluster("pool-busy", backends: 1, environment: ["BACKEND_CAPACITY": "1", "MAX_QUEUED_JOBS": "2"])
        defer { cluster.stop() }
        try await cluster.emulators[0].configure(["node_delay_ms": 150])
        let results = try await withThrowingTaskGroup(of: CurlResponse.self) { group in
            for index in 0..<8 {
                group.addTask {
                    try await cluster.gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "busy-\(index)", seed: index)))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let refused = results.filter { $0.status == 429 }
        let served = results.filter { $0.status == 200 }
        print("8 calls, capacity 1, queue bound 2: \(served.count) served, \(refused.count) refused")
        #expect(served.count + refused.count == 8)
        #expect(served.count >= 3)
        #expect(refused.count >= 1)
        for response in refused {
            #expect(response.header("Retry-After") == "5")
            #expect(try JSONValue.parse(response.body)["error"]?["code"] == "busy")
        }
    }

    @Test func generateCallsLeaveFastCGIThreadsForEverythingElse() async throws {
        // 9 threads: 8 stay free for other requests, so one generate call at a time.
        let cluster = try await startCluster("pool-threads", backends: 1, environment: ["FCGI_THREADS": "9"])
        defer { cluster.stop() }
        try await cluster.emulators[0].configure(["node_delay_ms": 200])
        let gateway = cluster.gateway
        let calls = Task { try await generateConcurrently(gateway, count: 3, label: "threads") }
        try await waitUntil { try await cluster.emulators[0].stats()["prompts_accepted"]?.intValue ?? 0 >= 1 }
        // While a generate call holds its thread, the rest of the API answers at once.
        #expect(try await gateway.get("/healthz").status == 200)
        #expect(try await gateway.get("/api/styles").status == 200)
        let results = try await calls.value
        let refused = results.filter { $0.status == 429 }
        #expect(results.filter { $0.status == 200 }.count >= 1)
        #expect(refused.count >= 1)
        #expect(refused.allSatisfy { $0.body.contains("generate calls and job submissions are in progress") })
    }

    @Test func jobSubmissionsShareTheGenerateCallsThreadsSoSlowOnesCannotTakeTheRest() async throws {
        // 9 threads: 8 stay free for other requests, one for a generate call or a job submission.
        let cluster = try await startCluster("pool-threads-jobs", backends: 1, environment: ["FCGI_THREADS": "9"])
        defer { cluster.stop() }
        try await cluster.emulators[0].configure(["hang": true])
        let gateway = cluster.gateway
        // ComfyUI never runs it: the call holds its place until its client gives up.
        let held = Task { try? await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "held")), timeout: .seconds(20)) }
        defer { held.cancel() }
        try await waitUntil { try await cluster.emulators[0].stats()["prompts_received"]?.intValue ?? 0 >= 1 }
        // A submission (one whose input-image URLs trickle would hold a thread that long) is refused.
        let submission = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "queued")))
        #expect(submission.status == 429, "\(submission.bodyText)")
        #expect(try JSONValue.parse(submission.body)["error"]?["code"] == "busy")
        #expect(submission.bodyText.contains("generate calls and job submissions"))
        #expect(try await gateway.get("/healthz").status == 200)
    }

    @Test func paintersAreToldWhenTheServiceIsBusy() async throws {
        let cluster = try await startCluster("pool-busy-session", backends: 1, environment: ["BACKEND_CAPACITY": "1", "MAX_QUEUED_JOBS": "0"])
        defer { cluster.stop() }
        let gateway = cluster.gateway
        try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
        try await cluster.emulators[0].configure(["node_delay_ms": 300])
        // A generate call holds the only slot; nothing may wait.
        let holder = Task { try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "holder"))) }
        try await waitUntil { try await cluster.emulators[0].stats()["prompts_accepted"]?.intValue ?? 0 >= 1 }
        let painter = try await DrawingClient.connect(port: gateway.port, sessionID: "too-late")
        await painter.sendSketch(Sketches.png(seed: 3))
        let error = try await painter.next(status: "error")
        #expect(error["message"]?.stringValue?.contains("busy") == true, "\(error)")
        #expect(try await holder.value.status == 200)
        // Once the slot is free the same painter is served.
        await painter.sendSketch(Sketches.png(seed: 4))
        _ = try await painter.next(status: "completed")
        await painter.close()
    }

    @Test func sigtermDuringLoadFinishesJobsInFlightAndExitsZero() async throws {
        let cluster = try await startCluster("pool-sigterm", backends: 1)
        defer { cluster.stop() }
        let emulator = cluster.emulators[0]
        try await emulator.configure(["node_delay_ms": 300])
        let load = Task { try await generateConcurrently(cluster.gateway, count: 4, label: "drain") }
        // All four calls reached the scheduler, running or queued there, before SIGTERM: each is
        // in flight. (Two prompts on ComfyUI did not mean that: a fourth call still on its way
        // through nginx got the 503 a stopping gateway gives new calls.)
        try await waitUntil {
            let health = try JSONValue.parse(try await cluster.gateway.get("/healthz").body)
            let running = health["backends"]?.arrayValue?.compactMap { $0["in_flight"]?.intValue }.reduce(0, +) ?? 0
            return running + (health["queued_jobs"]?.intValue ?? 0) == 4
        }
        kill(cluster.gateway.app.pid, SIGTERM)
        let results = try await load.value
        for (index, result) in results.enumerated() {
            #expect(result.status == 200, "job \(index) in flight at SIGTERM: \(result.body)")
            #expect(result.text == "drain-\(index)")
        }
        #expect(cluster.gateway.app.stop(SIGTERM, grace: .seconds(20)) == 0)
        #expect(cluster.gateway.app.log.contains("FastCGI stopped"))
        #expect(!cluster.gateway.app.log.contains("drain time is up"), "the drain finished in time")
    }

    @Test func sigtermAnswersJobsStillQueuedWhenTheDrainTimeIsUp() async throws {
        let cluster = try await startCluster("pool-drain", backends: 1, environment: ["BACKEND_CAPACITY": "1", "SHUTDOWN_DRAIN_TIMEOUT": "1s"])
        defer { cluster.stop() }
        let emulator = cluster.emulators[0]
        // The backend takes the first prompt and never runs it: the other two wait in the gateway.
        try await emulator.configure(["hang": true])
        let gateway = cluster.gateway
        let calls = Task {
            await withTaskGroup(of: (status: Int, body: String).self) { group in
                for index in 0..<3 {
                    group.addTask {
                        let body = Workflows.body(Workflows.txt2img(text: "drain-late-\(index)", seed: index))
                        guard let response = try? await gateway.post("/api/generate", json: body, timeout: .seconds(30)) else { return (-1, "no answer in 30 s") }
                        return (response.status, response.bodyText)
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
        }
        try await waitUntil {
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            return health["queued_jobs"] == 2
        }
        kill(gateway.app.pid, SIGTERM)
        let results = await calls.value
        let answered = results.filter { $0.status == 503 && $0.body.contains("the job was not started") }
        #expect(answered.count == 2, "\(results.map(\.body))")
        // The job that never ran out is left for the next start, and its caller is told so.
        #expect(results.filter { $0.status == 503 && $0.body.contains("it was stopped") }.count == 1, "\(results.map(\.body))")
        #expect(gateway.app.stop(SIGTERM, grace: .seconds(15)) == 0)
        #expect(gateway.app.log.contains("drain time is up"), "\(gateway.app.log)")
    }

    @Test func metricsAndHealthDetailsAreForAddressesInMetricsAllowOnly() async throws {
        try await withGateway("metrics-deny", environment: ["METRICS_ALLOW": "10.9.9.9, 192.0.2.0/24"]) { gateway, emulator in
            let refused = try await gateway.get("/metrics")
            #expect(refused.status == 403)
            #expect(try JSONValue.parse(refused.body)["error"]?["code"] == "forbidden")
            // A load balancer's answer: the status, not the backends' addresses, errors and models.
            let health = try await gateway.get("/healthz", headers: [("Operator-Client", "1"), ("X-Forwarded-For", "10.9.9.9")])
            #expect(health.status == 200)
            #expect(try JSONValue.parse(health.body) == .object(["status": "ok"]), "\(health.bodyText)")
            #expect(!health.bodyText.contains(emulator.url))
        }
        // Behind a proxy on this host, the client is who its X-Forwarded-For names, not the proxy.
        try await withGateway("metrics-proxied", environment: ["REAL_IP_FROM": "127.0.0.1"]) { gateway, emulator in
            let forwarded = [("X-Forwarded-For", "198.51.100.7")]
            #expect(try await gateway.get("/metrics", headers: forwarded).status == 403)
            #expect(try JSONValue.parse(try await gateway.get("/healthz", headers: forwarded).body) == .object(["status": "ok"]))
            #expect(try await gateway.get("/metrics").status == 200, "the proxy's own host is still an operator")
            let logPath = "\(gateway.runDirectory)/logs/access.log"
            try await waitUntil { try String(contentsOfFile: logPath, encoding: .utf8).contains("198.51.100.7 - - ") }
        }
        try await withGateway("metrics-allow") { gateway, emulator in
            let health = try JSONValue.parse(try await gateway.get("/healthz").body)
            #expect(health["status"] == "ok")
            #expect(health["backends"]?.arrayValue?.first?["url"] == .string(emulator.url), "this host is in the default METRICS_ALLOW")
        }
        // With METRICS_TOKEN, this host needs the token too; no log line quotes it.
        let token = "metrics-token-\(UUID().uuidString)"
        try await withGateway("metrics-token", environment: ["METRICS_TOKEN": token]) { gateway, emulator in
            #expect(try await gateway.get("/metrics").status == 401)
            #expect(try JSONValue.parse(try await gateway.get("/healthz").body) == .object(["status": "ok"]))
            let bearer = [("Authorization", "Bearer \(token)")]
            #expect(try await gateway.get("/metrics", headers: bearer).bodyText.contains("comfy_gateway_"))
            #expect(try JSONValue.parse(try await gateway.get("/healthz", headers: bearer).body)["backends"]?.arrayValue?.first?["url"] == .string(emulator.url))
            let logs = try ["access.log", "error.log"].map { try String(contentsOfFile: "\(gateway.runDirectory)/logs/\($0)", encoding: .utf8) }
            #expect(!(logs + [gateway.app.log]).contains { $0.contains(token) })
        }
    }

    @Test func metricsAndHealthReportJobsQueueAndBackends() async throws {
        let cluster = try await startCluster("pool-metrics", backends: 2)
        defer { cluster.stop() }
        let results = try await generateConcurrently(cluster.gateway, count: 3, label: "metrics")
        #expect(results.allSatisfy { $0.status == 200 })
        let metrics = try await cluster.gateway.get("/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
        let text = metrics.bodyText
        #expect(text.contains(#"comfy_gateway_jobs_total{priority="batch",outcome="success"} 3"#) || text.contains(#"comfy_gateway_jobs_total{outcome="success",priority="batch"} 3"#), "\(text)")
        #expect(text.contains("comfy_gateway_job_duration_seconds_bucket"))
        #expect(text.contains(#"comfy_gateway_backend_up{backend="\#(cluster.emulators[0].url)"} 1"#))
        #expect(text.contains("comfy_gateway_queue_depth"))
        #expect(text.contains("comfy_gateway_drawing_sessions"))
        let health = try JSONValue.parse(try await cluster.gateway.get("/healthz").body)
        #expect(health["queued_jobs"] == 0)
        #expect(health["backends"]?.arrayValue?[1]["capacity"] == 2)
        #expect(health["backends"]?.arrayValue?[1]["state"] == "up")
    }
}
