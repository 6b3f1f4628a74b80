import Comfy
import Foundation

/// Tests/Webhooks/webhook_receiver.py for one test: checks each delivery's signature with
/// Python's hmac and records it (`/ok`, `/fail/N`, `/hang`, `/reset`).
final class WebhookReceiver: Sendable {
    /// A Standard Webhooks secret for the tests (the receiver and the gateway share it).
    static let secret = "whsec_" + Data("comfy-gateway-test-webhook-key!!".utf8).base64EncodedString()

    let process: ChildProcess
    let port: Int
    let http: CurlHTTPClient
    let host: String

    /// - Parameter secret: what it verifies with (`secret`, the gateway's own, unless told).
    init(directory: String, http: CurlHTTPClient, host: String = "127.0.0.1", secret: String = WebhookReceiver.secret) throws {
        self.http = http
        self.host = host
        let pipe = Pipe()
        process = try ChildProcess(
            "/usr/bin/env", ["python3", "\(TestPaths.packageRoot)/Tests/Webhooks/webhook_receiver.py", "--secret", secret, "--host", host],
            logPath: "\(directory)/webhooks.log", stdout: pipe
        )
        port = try process.readyPort(from: pipe)
    }

    func url(_ path: String) -> String { "http://\(host):\(port)\(path)" }

    /// Every delivery so far, in arrival order.
    func deliveries() async throws -> [JSONValue] {
        let response = try await http.execute(CurlRequest(url: url("/deliveries")))
        return try JSONValue.parse(response.body).arrayValue ?? []
    }

    func stop() { process.stop() }
}
