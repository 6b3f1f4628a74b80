import Comfy
import Foundation

/// moto's standalone server (`python3 -m moto.server`) speaking S3 for one test, with an IAM
/// user whose keys sign requests, and SigV4 checking switched on.
///
/// moto 5 checks header signatures (bucket and object requests) only while its IAM
/// authentication is on, and then cannot serve presigned URLs at all (it looks for an
/// `Authorization` header); with it off it serves them without checking signature or expiry.
/// So uploads are made with checking on, downloads with it off, and presigned URLs are
/// verified by `verify(presignedURL:)` (botocore, AWS's own SigV4 code).
final class MotoServer: Sendable {
    let process: ChildProcess
    let port: Int
    let accessKeyID: String
    let secretAccessKey: String
    let http: CurlHTTPClient

    var url: String { "http://127.0.0.1:\(port)" }
    var host: String { "127.0.0.1:\(port)" }

    /// Starts moto, creates the IAM user and turns signature checking on.
    static func start(directory: String, http: CurlHTTPClient) async throws -> MotoServer {
        let port = TestPaths.freePort()
        let process = try ChildProcess("/usr/bin/env", ["python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", "\(port)"], logPath: "\(directory)/moto.log")
        do {
            try await waitUntil(timeout: .seconds(30)) {
                guard process.isRunning else { throw TestFailure("moto exited:\n\(process.log)") }
                return try await http.execute(CurlRequest(url: "http://127.0.0.1:\(port)/moto-api/", timeout: .seconds(2))).status == 200
            }
            // While moto's authentication is off, any key may sign these IAM calls.
            let bootstrap = S3Signer(accessKeyID: "bootstrap", secretAccessKey: "bootstrap", region: "us-east-1", service: "iam")
            _ = try await iam(http, port: port, signer: bootstrap, ["Action": "CreateUser", "UserName": "gateway"])
            let key = try await iam(http, port: port, signer: bootstrap, ["Action": "CreateAccessKey", "UserName": "gateway"])
            let policy = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#
            _ = try await iam(http, port: port, signer: bootstrap, ["Action": "PutUserPolicy", "UserName": "gateway", "PolicyName": "s3", "PolicyDocument": policy])
            let server = MotoServer(
                process: process, port: port, http: http,
                accessKeyID: try requireElement("AccessKeyId", in: key), secretAccessKey: try requireElement("SecretAccessKey", in: key)
            )
            try await server.checkSignatures(true)
            return server
        } catch {
            process.stop()
            throw error
        }
    }

    private init(process: ChildProcess, port: Int, http: CurlHTTPClient, accessKeyID: String, secretAccessKey: String) {
        self.process = process
        self.port = port
        self.http = http
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
    }

    /// Turns moto's IAM authentication (SigV4 checking) on or off.
    func checkSignatures(_ on: Bool) async throws {
        let response = try await http.execute(CurlRequest(method: "POST", url: "\(url)/moto-api/reset-auth", headers: [("Content-Type", "text/plain")], body: Array((on ? "0" : "inf").utf8)))
        guard response.status == 200 else { throw TestFailure("moto reset-auth: \(response.status) \(response.bodyText)") }
    }

    /// An S3 request signed with the IAM user's key, or with `secret` instead.
    func s3(_ method: String, path: String, query: [(String, String)] = [], secret: String? = nil) async throws -> CurlResponse {
        let signer = S3Signer(accessKeyID: accessKeyID, secretAccessKey: secret ?? secretAccessKey, region: "us-east-1")
        let emptyHash = Digest.hex(Digest.sha256([UInt8]()))
        let request = S3Signer.Request(method: method, host: host, path: path, query: query, headers: [("x-amz-content-sha256", emptyHash)], payloadHash: emptyHash)
        let headers = request.headers + signer.authorizationHeaders(for: request, at: UTCTimestamp(Date()))
        let queryText = query.map { "\(formEncode($0.0))=\(formEncode($0.1))" }.joined(separator: "&")
        return try await http.execute(CurlRequest(method: method, url: url + path + (queryText.isEmpty ? "" : "?" + queryText), headers: headers))
    }

    /// What botocore says of a presigned URL at `now`: `valid`, `signature-mismatch`, `expired` or `malformed`.
    func verify(presignedURL: String, now: Date = Date()) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "\(TestPaths.packageRoot)/Tests/StorageServers/verify_presigned.py", presignedURL, accessKeyID, secretAccessKey, "\(Int(now.timeIntervalSince1970))"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func stop() { process.stop() }

    /// An IAM query-API call (form-encoded POST) signed for the `iam` service.
    private static func iam(_ http: CurlHTTPClient, port: Int, signer: S3Signer, _ parameters: [String: String]) async throws -> String {
        let body = Array((parameters.merging(["Version": "2010-05-08"]) { $1 }).map { "\(formEncode($0.key))=\(formEncode($0.value))" }.joined(separator: "&").utf8)
        let contentType = "application/x-www-form-urlencoded; charset=utf-8"
        let request = S3Signer.Request(method: "POST", host: "127.0.0.1:\(port)", path: "/", headers: [("Content-Type", contentType)], payloadHash: Digest.hex(Digest.sha256(body)))
        let headers = request.headers + signer.authorizationHeaders(for: request, at: UTCTimestamp(Date()))
        let response = try await http.execute(CurlRequest(method: "POST", url: "http://127.0.0.1:\(port)/", headers: headers, body: body))
        guard response.status == 200 else { throw TestFailure("moto IAM \(parameters["Action"] ?? ""): \(response.status) \(response.bodyText)") }
        return response.bodyText
    }
}

/// RFC 3986 percent-encoding of a form or query value.
func formEncode(_ text: String) -> String {
    let allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
}

/// The text of the first `<name>` element of an XML answer.
func requireElement(_ name: String, in text: String) throws -> String {
    guard let start = text.range(of: "<\(name)>"), let end = text.range(of: "</\(name)>", range: start.upperBound..<text.endIndex) else {
        throw TestFailure("no <\(name)> in \(text)")
    }
    return String(text[start.upperBound..<end.lowerBound])
}
