import Comfy
import Foundation

/// The ComfyUI emulator (Tests/Emulator/comfyui_emulator.py) running for one test.
final class Emulator: Sendable {
    let process: ChildProcess
    let port: Int
    let directory: String
    let http: CurlHTTPClient

    let host: String

    var url: String { "http://\(host):\(port)" }

    /// Starts it on `host` and waits for its `READY <port>` line.
    init(directory: String, http: CurlHTTPClient, arguments: [String] = [], port: Int = 0, host: String = "127.0.0.1") throws {
        self.directory = directory
        self.host = host
        self.http = http
        let pipe = Pipe()
        process = try ChildProcess(
            "/usr/bin/env",
            ["python3", TestPaths.emulatorScript, "--host", host, "--port", "\(port)", "--data-dir", "\(directory)/comfy"] + arguments,
            logPath: "\(directory)/emulator.log",
            stdout: pipe
        )
        let ready = try process.readyPort(from: pipe)
        self.port = ready
    }

    /// Merges settings into the emulator's fault-injection configuration.
    func configure(_ settings: [String: JSONValue]) async throws {
        let response = try await http.execute(CurlRequest(method: "POST", url: "\(url)/emulator/config", body: JSONValue.object(settings).encoded()))
        guard response.status == 200 else { throw TestFailure("emulator config: \(response.status) \(response.bodyText)") }
    }

    /// The emulator's counters (prompts received, interrupts, queue deletes, ...).
    func stats() async throws -> JSONValue {
        let response = try await http.execute(CurlRequest(url: "\(url)/emulator/stats"))
        return try JSONValue.parse(response.body)
    }

    func stop() { process.stop() }
}

/// A test precondition that did not hold.
struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
