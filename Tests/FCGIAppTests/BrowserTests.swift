import Comfy
import Foundation
import Testing

/// The drawing page (static/index.html) in headless Chromium, driven by
/// Tests/Browser/drawing_page_test.py, against the real gateway and the emulator.
@Suite(.serialized)
struct BrowserTests {
    /// The script's own budget; its watchdog kills the browser 15 s after it.
    static let scriptBudgetSeconds = 90
    /// The hard bound on the whole script run: past it the test stops the script.
    static let runLimit: Duration = .seconds(120)

    @Test func strokesDrawnInChromiumMoveTheProgressBarAndShowTheGeneratedImage() async throws {
        // The screenshot is kept after the run, pass or fail, at
        // <package root>/.build/test-artifacts/drawing-page.png (.build is not in git).
        let artifacts = "\(TestPaths.packageRoot)/.build/test-artifacts"
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let screenshot = "\(artifacts)/drawing-page.png"
        try? FileManager.default.removeItem(atPath: screenshot)

        try await withGateway("browser") { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            // A little time per node, so that progress arrives in steps the page can show.
            try await emulator.configure(["node_delay_ms": 30])

            let run = try await BoundedRun.start(
                "/usr/bin/env",
                ["python3", "\(TestPaths.packageRoot)/Tests/Browser/drawing_page_test.py",
                 "--url", gateway.baseURL + "/", "--screenshot", screenshot, "--timeout", "\(Self.scriptBudgetSeconds)"],
                directory: gateway.runDirectory
            ).finish(within: Self.runLimit)
            let diagnostics = "exit \(run.status)\(run.timedOut ? " (interrupted after \(Self.runLimit))" : "")\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)"
            #expect(!run.timedOut, "\(diagnostics)")
            #expect(run.status == 0, "\(diagnostics)")

            // The script's verdict is its last stdout line.
            let lastLine = try #require(run.stdout.split(separator: "\n").last, "\(diagnostics)")
            let verdict = try JSONValue.parse(Array(lastLine.utf8))
            #expect(verdict["ok"] == true, "\(diagnostics)")
            #expect(verdict["status"] == "done")
            #expect(verdict["styles"] == .array(["realistic"]))
            #expect((verdict["websocket_opens"]?.intValue ?? 0) >= 1)
            // Updates went out while the pointer was down, not only when a stroke ended.
            #expect((verdict["sketch_updates_sent"]?.intValue ?? 0) >= 1)
            #expect((verdict["sent_during_strokes"]?.intValue ?? 0) >= 1)
            #expect((verdict["processing_messages"]?.intValue ?? 0) >= 1)
            #expect((verdict["completed_messages"]?.intValue ?? 0) >= 1)
            let progress = verdict["progress_seen"]?.arrayValue?.compactMap(\.doubleValue) ?? []
            #expect(progress.contains { $0 > 0 && $0 < 1 }, "the progress bar showed a partial value: \(progress)")
            #expect(progress.allSatisfy { (0...1).contains($0) }, "\(progress)")
            let size = verdict["result_size"]?.arrayValue?.compactMap(\.intValue) ?? []
            #expect(size.count == 2 && size.allSatisfy { $0 > 0 }, "the result <img> decoded an image: \(size)")

            // The <img> shows an image the gateway serves (the completed message's image_url, or
            // /api/result/<session>): one the emulator made from a sketch with the style's prompt.
            let source = try #require(verdict["result_src"]?.stringValue)
            #expect(source.hasPrefix(gateway.baseURL + "/"), "result_src \(source)")
            let result = try await gateway.get(source)
            #expect(result.status == 200)
            #expect(result.header("Content-Type") == "image/png")
            let metadata = try #require(emulatorMetadata(ofPNG: result.body))
            #expect(metadata["texts"]?.arrayValue?.first == "a house on a hill")
            #expect(metadata["image_sha256"]?.stringValue?.count == 64, "made from an uploaded sketch")
            // What the browser decoded has the size in the image's PNG header.
            let header = result.body.count >= 24 ? Array(result.body[16..<24]) : []
            let declared = stride(from: 0, to: header.count, by: 4).map { header[$0..<$0 + 4].reduce(0) { ($0 << 8) | Int($1) } }
            #expect(size == declared, "browser \(size), PNG header \(declared)")

            let shot = try #require(FileManager.default.contents(atPath: screenshot), "no screenshot at \(screenshot)\n\(diagnostics)")
            #expect(Array(shot.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "the screenshot is a PNG")
            #expect(verdict["screenshot"] == .string(screenshot))
        }
    }
}

extension BrowserTests {
    /// With DRAWING_AUTH, a key this browser kept that the gateway refuses is dropped and the
    /// page asks for one; a painter who cancels is asked once, told why, and the page stops
    /// posting sketches instead of asking every few seconds. A kept key can be forgotten.
    @Test func aRefusedKeyIsDroppedAPainterWhoCancelsIsAskedOnceAndToldToReloadAndAKeptKeyCanBeForgotten() async throws {
        let artifacts = "\(TestPaths.packageRoot)/.build/test-artifacts"
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        try await withGateway("browser-key", environment: ["DRAWING_AUTH": "true"]) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            let run = try await BoundedRun.start(
                "/usr/bin/env",
                ["python3", "\(TestPaths.packageRoot)/Tests/Browser/drawing_page_test.py", "--key-declined",
                 "--url", gateway.baseURL + "/", "--screenshot", "\(artifacts)/drawing-page-key.png", "--timeout", "\(Self.scriptBudgetSeconds)"],
                directory: gateway.runDirectory
            ).finish(within: Self.runLimit)
            let diagnostics = "exit \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)"
            #expect(run.status == 0, "\(diagnostics)")
            let verdict = try JSONValue.parse(Array(try #require(run.stdout.split(separator: "\n").last, "\(diagnostics)").utf8))
            #expect(verdict["ok"] == true, "\(diagnostics)")
            #expect(verdict["prompts"] == 1, "asked once: \(verdict)")
            #expect(verdict["sketch_posts"] == 1, "no sketch posted after the refusal: \(verdict)")
            #expect(verdict["error"]?.stringValue?.contains("Reload the page") == true, "\(verdict)")
            #expect(verdict["page_errors"] == .array([]), "\(verdict)")
            #expect(verdict["refused_key_kept"] == .null, "\(verdict)")
            #expect(verdict["forgotten_key"] == .null, "\(verdict)")
            #expect(
                verdict["forget_key_shown"] == .object(["with a key": true, "after the refusal": false, "after forgetting": false]), "\(verdict)"
            )
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }
}

/// A command whose stdout and stderr go to files, waited for with a hard time limit.
struct BoundedRun {
    let process: Process
    let stdoutPath: String
    let stderrPath: String

    /// How the run ended.
    struct Outcome {
        var status: Int32
        var timedOut: Bool
        var stdout: String
        var stderr: String
    }

    /// Starts `executable`; its output files go in `directory`.
    static func start(_ executable: String, _ arguments: [String], directory: String) throws -> BoundedRun {
        let label = UUID().uuidString.prefix(8)
        let run = BoundedRun(process: Process(), stdoutPath: "\(directory)/run-\(label).out", stderrPath: "\(directory)/run-\(label).err")
        _ = FileManager.default.createFile(atPath: run.stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: run.stderrPath, contents: nil)
        run.process.executableURL = URL(fileURLWithPath: executable)
        run.process.arguments = arguments
        // Files, not pipes: Chromium's helpers may inherit the descriptors and outlive the script.
        run.process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: run.stdoutPath))
        run.process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: run.stderrPath))
        try run.process.run()
        return run
    }

    /// Waits for the exit; past `limit` sends SIGTERM (drawing_page_test.py then quits the
    /// browser and still prints its verdict), and SIGKILL 15 s later.
    func finish(within limit: Duration) async -> Outcome {
        var timedOut = false
        var status = await exitStatus(within: limit)
        if status == nil {
            timedOut = true
            kill(process.processIdentifier, SIGTERM)
            status = await exitStatus(within: .seconds(15))
            if status == nil {
                kill(process.processIdentifier, SIGKILL)
                status = await exitStatus(within: .seconds(10))
            }
        }
        let read = { (path: String) in (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        return Outcome(status: status ?? -1, timedOut: timedOut, stdout: read(stdoutPath), stderr: read(stderrPath))
    }

    /// Polls for the exit without blocking a thread of the cooperative pool.
    private func exitStatus(within limit: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let status = ChildProcess.exitStatus(of: process) { return status }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }
}
