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
    /// Where its nginx is reached: its network namespace's address when it runs in one.
    let host: String

    var baseURL: String { "http://\(host):\(port)" }

    init(directory: String, backends: [String], http: CurlHTTPClient, environment: [String: String] = [:], namespace: NetworkNamespace? = nil) throws {
        self.http = http
        host = namespace?.address ?? "127.0.0.1"
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
        // `ip netns exec` execs the supervisor: the pid is its own.
        let command: (executable: String, arguments: [String]) = namespace?.command(TestPaths.gatewayBinary, ["run"]) ?? (TestPaths.gatewayBinary, ["run"])
        app = try ChildProcess(command.executable, command.arguments, environment: env, directory: directory, logPath: "\(directory)/app.log")
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

    func post(_ path: String, json: JSONValue, headers: [(String, String)] = [], timeout: Duration = .seconds(60)) async throws -> CurlResponse {
        try await post(path, body: json.encoded(), headers: headers, timeout: timeout)
    }

    func post(
        _ path: String, body: [UInt8], contentType: String = "application/json", headers: [(String, String)] = [], timeout: Duration = .seconds(60)
    ) async throws -> CurlResponse {
        try await http.execute(CurlRequest(method: "POST", url: baseURL + path, headers: [("Content-Type", contentType)] + headers, body: body, timeout: timeout))
    }

    func delete(_ path: String) async throws -> CurlResponse {
        try await http.execute(CurlRequest(method: "DELETE", url: baseURL + path))
    }

    /// A stored job, as `GET /api/jobs/{id}` answers it.
    func job(_ id: String, headers: [(String, String)] = []) async throws -> JSONValue {
        try JSONValue.parse(try await get("/api/jobs/\(id)", headers: headers).body)
    }

    /// The app's pid (the supervisor's child), as it wrote it.
    func appPID() throws -> Int32 {
        guard let text = try? String(contentsOfFile: "\(runDirectory)/app.pid", encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw TestFailure("no app.pid in \(runDirectory)")
        }
        return pid
    }

    /// SIGKILL of the whole `make run`: the supervisor, the app and nginx, with no chance to clean up.
    func killEverything() {
        // The supervisor first: it would start a new app the moment the old one died.
        kill(app.pid, SIGKILL)
        var pids: [Int32] = []
        for file in ["app.pid", "nginx.pid"] {
            if let text = try? String(contentsOfFile: "\(runDirectory)/\(file)", encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                pids.append(pid)
                // nginx's workers would go on serving without their master.
                pids += processChildren(of: pid)
            }
        }
        for pid in pids { kill(pid, SIGKILL) }
        app.stop(SIGKILL)
    }

    func get(_ pathOrURL: String, headers: [(String, String)] = [], method: String = "GET") async throws -> CurlResponse {
        let url = pathOrURL.hasPrefix("http") ? pathOrURL : baseURL + pathOrURL
        return try await http.execute(CurlRequest(method: method, url: url, headers: headers))
    }

    /// The files in OUTPUT_DIR (hidden temporary files included), but for the empty files the
    /// store makes ahead for its next writes (`.tmp-spare-*`): one with any byte in it is listed.
    func storedFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: outputDirectory).filter { name in
            guard name.hasPrefix(".tmp-spare-") else { return true }
            let size = (try? FileManager.default.attributesOfItem(atPath: "\(outputDirectory)/\(name)")[.size] as? Int) ?? 0
            return size != 0
        }.sorted()
    }

    /// Stops nginx and the app (SIGTERM to the supervisor); returns the app's exit status.
    @discardableResult
    func stop() -> Int32 {
        app.stop(SIGTERM, grace: .seconds(30))
    }
}
