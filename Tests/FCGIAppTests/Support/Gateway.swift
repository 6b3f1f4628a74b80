import Comfy
import Foundation

/// The real gateway for one test: `FCGIApp run` (the supervisor `make run` starts), which
/// renders nginx, starts the app and a real nginx in front of it on a free port.
final class Gateway: Sendable {
    /// The supervisor; the app's and its own log lines are in its log, and SIGTERM drains both.
    let app: ChildProcess
    let port: Int
    let runDirectory: String
    let outputDirectory: String
    let workflowDirectory: String
    let http: CurlHTTPClient

    var baseURL: String { "http://127.0.0.1:\(port)" }

    init(directory: String, backends: [String], http: CurlHTTPClient, environment: [String: String] = [:]) throws {
        self.http = http
        port = TestPaths.freePort()
        runDirectory = "\(directory)/run"
        outputDirectory = "\(directory)/output"
        workflowDirectory = "\(directory)/workflow"
        try FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        var env = [
            "PORT": "\(port)",
            "RUN_DIR": runDirectory,
            "FCGI_SOCKET": "\(runDirectory)/fcgi.sock",
            "WS_SOCKET": "\(runDirectory)/ws.sock",
            "OUTPUT_DIR": outputDirectory,
            "STATE_DIR": "\(directory)/state",
            "WORKFLOW_DIR": workflowDirectory,
            "COMFYUI_SERVER": backends.joined(separator: ","),
            "FCGI_THREADS": "128",
            "LOG_LEVEL": "info",
            "STATIC_DIR": "\(TestPaths.packageRoot)/static",
            "NGINX_TEMPLATE_DIR": "\(TestPaths.packageRoot)/nginx",
        ]
        env.merge(environment) { _, new in new }
        try FileManager.default.createDirectory(atPath: env["WORKFLOW_DIR"]!, withIntermediateDirectories: true)

        // In the test's own folder: a developer's ./.env must not leak in.
        app = try ChildProcess(TestPaths.gatewayBinary, ["run"], environment: env, directory: directory, logPath: "\(directory)/app.log")
    }

    /// Waits until nginx answers and `/healthz` reports the wanted state.
    func waitUntilHealthy(_ wantStatus: Int = 200) async throws {
        for _ in 0..<400 {
            if let response = try? await http.execute(CurlRequest(url: "\(baseURL)/healthz", timeout: .seconds(2))), response.status == wantStatus {
                return
            }
            guard app.isRunning else { throw TestFailure("FCGIApp run exited:\n\(app.log)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("gateway never became healthy:\n\(app.log)")
    }

    func post(_ path: String, json: JSONValue, timeout: Duration = .seconds(60)) async throws -> CurlResponse {
        try await post(path, body: json.encoded(), timeout: timeout)
    }

    func post(_ path: String, body: [UInt8], contentType: String = "application/json", timeout: Duration = .seconds(60)) async throws -> CurlResponse {
        try await http.execute(CurlRequest(method: "POST", url: baseURL + path, headers: [("Content-Type", contentType)], body: body, timeout: timeout))
    }

    func get(_ pathOrURL: String, headers: [(String, String)] = [], method: String = "GET") async throws -> CurlResponse {
        let url = pathOrURL.hasPrefix("http") ? pathOrURL : baseURL + pathOrURL
        return try await http.execute(CurlRequest(method: method, url: url, headers: headers))
    }

    /// The files in OUTPUT_DIR (hidden temporary files included).
    func storedFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: outputDirectory).sorted()
    }

    /// Stops nginx and the app (SIGTERM to the supervisor); returns the app's exit status.
    @discardableResult
    func stop() -> Int32 {
        app.stop(SIGTERM, grace: .seconds(30))
    }
}
