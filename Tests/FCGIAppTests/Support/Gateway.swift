import Comfy
import Foundation

/// The real gateway for one test: the built FCGIApp behind a real nginx on a free port.
final class Gateway: Sendable {
    let app: ChildProcess
    let nginx: ChildProcess
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
            "WORKFLOW_DIR": workflowDirectory,
            "COMFYUI_SERVER": backends.joined(separator: ","),
            "FCGI_THREADS": "128",
            "LOG_LEVEL": "info",
        ]
        env.merge(environment) { _, new in new }
        try FileManager.default.createDirectory(atPath: env["WORKFLOW_DIR"]!, withIntermediateDirectories: true)

        let render = try ChildProcess("\(TestPaths.packageRoot)/scripts/render-nginx.sh", [], environment: env, logPath: "\(directory)/render.log")
        guard render.stop(0) == 0 else { throw TestFailure("render-nginx.sh failed:\n\(render.log)") }

        app = try ChildProcess(TestPaths.gatewayBinary, [], environment: env, logPath: "\(directory)/app.log")
        let socket = env["FCGI_SOCKET"]!
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: socket) {
            guard app.isRunning else { throw TestFailure("FCGIApp exited:\n\(app.log)") }
            usleep(20_000)
        }
        nginx = try ChildProcess(
            "/usr/sbin/nginx",
            ["-e", "\(runDirectory)/logs/error.log", "-p", "\(runDirectory)/nginx", "-c", "\(runDirectory)/nginx/nginx.conf"],
            logPath: "\(directory)/nginx.log"
        )
    }

    /// Waits until nginx answers and `/healthz` reports the wanted state.
    func waitUntilHealthy(_ wantStatus: Int = 200) async throws {
        for _ in 0..<200 {
            if let response = try? await http.execute(HTTPClientRequest(url: "\(baseURL)/healthz", timeout: .seconds(2))), response.status == wantStatus {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("gateway never became healthy:\n\(app.log)")
    }

    func post(_ path: String, json: JSONValue, timeout: Duration = .seconds(60)) async throws -> HTTPClientResponse {
        try await post(path, body: json.encoded(), timeout: timeout)
    }

    func post(_ path: String, body: [UInt8], contentType: String = "application/json", timeout: Duration = .seconds(60)) async throws -> HTTPClientResponse {
        try await http.execute(HTTPClientRequest(method: "POST", url: baseURL + path, headers: [("Content-Type", contentType)], body: body, timeout: timeout))
    }

    func get(_ pathOrURL: String, headers: [(String, String)] = [], method: String = "GET") async throws -> HTTPClientResponse {
        let url = pathOrURL.hasPrefix("http") ? pathOrURL : baseURL + pathOrURL
        return try await http.execute(HTTPClientRequest(method: method, url: url, headers: headers))
    }

    /// The files in OUTPUT_DIR (hidden temporary files included).
    func storedFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: outputDirectory).sorted()
    }

    /// Stops nginx then the app (SIGTERM); returns the app's exit status.
    @discardableResult
    func stop() -> Int32 {
        // SIGTERM is nginx's fast shutdown: it closes proxied WebSockets instead of waiting on them.
        nginx.stop(SIGTERM)
        return app.stop(SIGTERM)
    }
}
