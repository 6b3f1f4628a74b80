import Comfy
import Foundation

/// Tests/StorageServers/oss_server.py for one test: an OSS stand-in on `<bucket>.localhost:<port>`
/// that checks V1 signatures with its own Python implementation.
final class OSSServer: Sendable {
    let process: ChildProcess
    let port: Int
    let accessKeyID = "LTAI-gateway-test"
    let accessKeySecret = "oss-test-secret-do-not-log"

    /// `http://localhost:<port>`: curl resolves `<bucket>.localhost` to the loopback address.
    var endpoint: String { "http://localhost:\(port)" }

    /// Starts it and waits for its `READY <port>` line; `failPuts` uploads are first answered
    /// 503, and each upload is held `putDelayMilliseconds` before its answer.
    init(directory: String, failPuts: Int = 0, putDelayMilliseconds: Int = 0) throws {
        let pipe = Pipe()
        process = try ChildProcess(
            "/usr/bin/env",
            ["python3", "\(TestPaths.packageRoot)/Tests/StorageServers/oss_server.py", "--access-key-id", accessKeyID, "--access-key-secret", accessKeySecret, "--fail-puts", "\(failPuts)",
             "--put-delay-ms", "\(putDelayMilliseconds)"],
            logPath: "\(directory)/oss.log",
            stdout: pipe
        )
        var line = [UInt8]()
        while true {
            guard let byte = pipe.fileHandleForReading.readData(ofLength: 1).first else { throw TestFailure("OSS server exited before READY:\n\(process.log)") }
            if byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("READY "), let ready = Int(text.dropFirst(6)) else { throw TestFailure("OSS server said \(text)") }
        port = ready
    }

    /// Uploads arrived (`started`), answered (`puts`), and objects stored (`bucket/key`).
    func stats(http: CurlHTTPClient) async throws -> JSONValue {
        try JSONValue.parse(try await http.execute(CurlRequest(url: "http://control.localhost:\(port)/stats")).body)
    }

    func stop() { process.stop() }
}
