import Comfy
import Foundation
import Testing

/// `FCGIApp run` itself: one per RUN_DIR, its children out of the terminal's reach, and nothing
/// left behind when it gives up.
@Suite(.serialized)
struct SupervisorTests {
    @Test func aSecondRunOnTheSameRunDirectoryIsRefusedAndTheFirstServesOn() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("supervisor-twice")
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let first = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { first.stop() }
        try await first.waitUntilHealthy()
        let second = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: ["PORT": "\(first.port)"])
        defer { second.stop() }
        #expect(second.app.waitForExit(within: .seconds(30)) == 2)
        #expect(second.app.log.contains("another gateway runs in \(first.runDirectory)"), "\(second.app.log)")
        // The first one's sockets and configuration are untouched.
        #expect(try await first.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "still here"))).status == 200)
        #expect(first.app.isRunning)
    }

    @Test func aSecondGatewayOnTheSameSQLiteJobsIsRefusedAndTheFirstServesOn() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("supervisor-state")
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let first = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { first.stop() }
        try await first.waitUntilHealthy()
        // Its own RUN_DIR and port, the first one's jobs: it would take up and run them too.
        let other = try TestPaths.makeTemporaryDirectory("supervisor-state-2")
        let second = try Gateway(directory: other, backends: [emulator.url], http: testHTTP, environment: ["STATE_DIR": "\(directory)/state"])
        defer { second.stop() }
        #expect(second.app.waitForExit(within: .seconds(60)) == 78)
        #expect(second.app.log.contains("another gateway serves the jobs in \(directory)/state/jobs.sqlite"), "\(second.app.log)")
        #expect(try await first.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "still mine"))).status == 200)
    }

    @Test func aPortTakenByAnotherProgramStopsTheStartWithAHintAtPORT() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("supervisor-port")
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        // Another program listens on the port.
        let taken = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(taken) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = INADDR_ANY
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(taken, $0, length) == 0 && getsockname(taken, $0, &length) == 0 }
        }
        #expect(bound && listen(taken, 4) == 0)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: ["PORT": "\(port)"])
        defer { gateway.stop() }
        #expect(gateway.app.waitForExit(within: .seconds(60)) == 1)
        #expect(gateway.app.log.contains("port \(port) is taken by another program: stop it, or set PORT to a free port"), "\(gateway.app.log)")
    }

    /// A clone under "My Projects" works: nginx's configuration quotes every path.
    @Test func folderNamesWithSpacesServeTheAPIThePageAndTheImages() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("paths with spaces")
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let statics = "\(directory)/static files"
        try FileManager.default.copyItem(atPath: "\(TestPaths.packageRoot)/static", toPath: statics)
        let gateway = try Gateway(
            directory: directory, backends: [emulator.url], http: testHTTP,
            environment: ["RUN_DIR": "\(directory)/run dir", "OUTPUT_DIR": "\(directory)/output images", "STATIC_DIR": statics,
                          "FCGI_SOCKET": "\(directory)/run dir/fcgi.sock", "WS_SOCKET": "\(directory)/run dir/ws.sock"]
        )
        defer { gateway.stop() }
        try await gateway.waitUntilHealthy()
        let answer = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "spaced")))
        #expect(answer.status == 200, "\(answer.bodyText)")
        let image = try await gateway.get(try #require(try JSONValue.parse(answer.body)["url"]?.stringValue))
        #expect(emulatorMetadata(ofPNG: image.body)?["texts"]?.arrayValue?.first == "spaced")
        #expect(try await gateway.get("/").bodyText.contains("<canvas"))
        #expect(FileManager.default.fileExists(atPath: "\(directory)/run dir/logs/access.log"))
    }

    /// Ctrl-C and a closed terminal signal the terminal's process group: nginx and the app are
    /// not in it, so only the supervisor hears them, and drains both.
    @Test func nginxAndTheAppRunInProcessGroupsOfTheirOwn() async throws {
        try await withGateway("supervisor-groups") { gateway, _ in
            let supervisorGroup = getpgid(gateway.app.pid)
            for name in ["app.pid", "nginx.pid"] {
                let text = try String(contentsOfFile: "\(gateway.runDirectory)/\(name)", encoding: .utf8)
                let pid = try #require(Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)))
                #expect(getpgid(pid) == pid, "\(name): a group of its own")
                #expect(getpgid(pid) != supervisorGroup)
            }
        }
    }

    /// An app that cannot start again (its settings broke meanwhile) stops the supervisor, and
    /// nginx with it: no orphan keeps the port, answering 503.
    @Test func anAppThatRefusesToRestartTakesNginxDownWithTheSupervisor() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("supervisor-refused")
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { gateway.stop() }
        try await gateway.waitUntilHealthy()
        let nginx = try #require(Int32(try String(contentsOfFile: "\(gateway.runDirectory)/nginx.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        // The app reads `.env` again when it starts.
        try "GENERATE_TIMEOUT=banana\n".write(toFile: "\(directory)/.env", atomically: true, encoding: .utf8)
        kill(try gateway.appPID(), SIGKILL)
        #expect(gateway.app.waitForExit(within: .seconds(60)) == 78, "\(gateway.app.log)")
        #expect(gateway.app.log.contains("GENERATE_TIMEOUT"), "\(gateway.app.log)")
        try await waitUntil(timeout: .seconds(15)) { kill(nginx, 0) != 0 }
    }

    @Test func anAppThatKeepsCrashingIsStartedAgainAfterLongerPausesWhileNginxAnswers503() async throws {
        try await withGateway("supervisor-backoff") { gateway, _ in
            var pids: Set<Int32> = []
            for _ in 0..<3 {
                let pid = try gateway.appPID()
                pids.insert(pid)
                kill(pid, SIGKILL)
                try await waitUntil(timeout: .seconds(30)) { (try? gateway.appPID()).map { !pids.contains($0) } ?? false }
                try await gateway.waitUntilHealthy()
            }
            // A kill may come before the supervisor saw the new app listen ("did not start"): a quick stop all the same.
            let pauses = gateway.app.log.split(separator: "\n").filter { $0.contains("app.restart_in=") }.map { line in
                line.firstRange(of: "app.restart_in=").map { String(line[$0.upperBound...].prefix { $0 != " " }) } ?? String(line)
            }
            // The first crash is restarted at once; each quick one after it waits twice as long.
            #expect(pauses == ["0.0", "1.0", "2.0"], "\(gateway.app.log)")

            // In a pause the API answers that the app is away, and images are still served.
            kill(try gateway.appPID(), SIGKILL)
            try await waitUntil(timeout: .seconds(10)) { gateway.app.log.contains("app.restart_in=4.0") }
            let away = try await gateway.get("/api/styles")
            #expect(away.status == 503)
            #expect(try JSONValue.parse(away.body)["error"]?["code"] == "app_unavailable")
            try await gateway.waitUntilHealthy()
            #expect(gateway.app.isRunning)
        }
    }
}
