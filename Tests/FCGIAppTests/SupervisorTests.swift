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
}
