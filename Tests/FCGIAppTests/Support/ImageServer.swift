import Comfy
import Foundation

/// Tests/Inputs/image_server.py for one test: serves input images from a folder, redirect
/// chains, oversized and slow answers, and records what was asked for.
final class ImageServer: Sendable {
    let process: ChildProcess
    let port: Int
    let directory: String
    let http: CurlHTTPClient

    init(directory: String, http: CurlHTTPClient) throws {
        self.http = http
        self.directory = "\(directory)/images"
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        let pipe = Pipe()
        process = try ChildProcess(
            "/usr/bin/env", ["python3", "\(TestPaths.packageRoot)/Tests/Inputs/image_server.py", "--directory", self.directory],
            logPath: "\(directory)/images.log", stdout: pipe
        )
        port = try process.readyPort(from: pipe)
    }

    /// Puts an image in the served folder; answers its URL.
    func serve(_ bytes: [UInt8], as name: String) throws -> String {
        try Data(bytes).write(to: URL(fileURLWithPath: "\(directory)/\(name)"))
        return url("/files/\(name)")
    }

    func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    /// The paths asked for so far.
    func requests() async throws -> [String] {
        let response = try await http.execute(CurlRequest(url: url("/requests")))
        return (try JSONValue.parse(response.body).arrayValue ?? []).compactMap(\.stringValue)
    }

    func stop() { process.stop() }
}
