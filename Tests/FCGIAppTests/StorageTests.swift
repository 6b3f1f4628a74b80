import Comfy
import Foundation
import Testing

/// Image storage end to end: S3 (moto), OSS (a signature-checking stand-in), failures,
/// configuration and retention, through real nginx and the real app.
@Suite(.serialized)
struct StorageTests {
    /// Seconds from now to an ISO 8601 `expires_at`.
    func secondsUntil(_ iso8601: String) throws -> Double {
        let formatter = ISO8601DateFormatter()
        let date = try #require(formatter.date(from: iso8601), "\(iso8601) is ISO 8601")
        return date.timeIntervalSinceNow
    }

    /// The environment of a gateway storing in moto's `bucket`.
    func s3Environment(_ moto: MotoServer, bucket: String, endpoint: String? = nil, secret: String? = nil) -> [String: String] {
        [
            "STORAGE": "s3", "S3_ENDPOINT": endpoint ?? moto.url, "S3_REGION": "us-east-1", "S3_BUCKET": bucket, "S3_PREFIX": "renders/",
            "S3_ACCESS_KEY_ID": moto.accessKeyID, "S3_SECRET_ACCESS_KEY": secret ?? moto.secretAccessKey, "S3_FORCE_PATH_STYLE": "true",
        ]
    }

    @Test func s3UploadsAreSignedAndPresignedURLsServeTheSameBytes() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("s3-moto")
        let moto = try await MotoServer.start(directory: directory, http: testHTTP)
        defer { moto.stop() }
        // moto checks SigV4 now: a wrong secret is refused, the right one creates the bucket.
        #expect(try await moto.s3("PUT", path: "/gateway-images", secret: "not-the-secret").status == 403)
        let created = try await moto.s3("PUT", path: "/gateway-images")
        #expect(created.status == 200, "\(created.bodyText)")

        try await withGateway("s3", environment: s3Environment(moto, bucket: "gateway-images")) { gateway, _ in
            let generated = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "stored in s3")))
            #expect(generated.status == 200, "\(generated.bodyText)")
            let answer = try JSONValue.parse(generated.body)
            let url = try #require(answer["url"]?.stringValue)
            let filename = try #require(answer["filename"]?.stringValue)
            #expect(url.hasPrefix("\(moto.url)/gateway-images/renders/\(filename)?X-Amz-Algorithm=AWS4-HMAC-SHA256&"))
            // SigV4's seven days at most: the answer says when the URL expires.
            let expiresIn = try secondsUntil(try #require(answer["expires_at"]?.stringValue))
            #expect(abs(expiresIn - 604_800) < 120, "expires in \(expiresIn) s")

            let file = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "a file in s3", seed: 7)))
            #expect(file.status == 200)
            let fileURL = try #require(file.header("X-Image-URL"))
            #expect(abs(try secondsUntil(try #require(file.header("X-Image-URL-Expires"))) - 604_800) < 120)

            // The uploads went through moto's signature check (PUT object): a signed GET finds the bytes.
            let object = try await moto.s3("GET", path: "/gateway-images/renders/\(filename)")
            #expect(object.status == 200)
            #expect(object.body == Array(try Data(contentsOf: URL(fileURLWithPath: "\(gateway.outputDirectory)/\(filename)"))))

            // Signature and expiry of the presigned URLs, by botocore.
            #expect(try moto.verify(presignedURL: url) == "valid")
            #expect(try moto.verify(presignedURL: fileURL) == "valid")
            #expect(try moto.verify(presignedURL: url, now: Date().addingTimeInterval(604_800 + 60)) == "expired")
            let last = url.last!
            let tampered = String(url.dropLast()) + (last == "0" ? "1" : "0")
            #expect(try moto.verify(presignedURL: tampered) == "signature-mismatch")
            let signer = S3Signer(accessKeyID: moto.accessKeyID, secretAccessKey: moto.secretAccessKey, region: "us-east-1")
            let request = S3Signer.Request(method: "GET", host: moto.host, path: "/gateway-images/renders/\(filename)", payloadHash: S3Signer.unsignedPayload)
            let expired = signer.presignedURL(for: request, scheme: "http", at: UTCTimestamp(Date().addingTimeInterval(-10)), expiresIn: 1)
            #expect(try moto.verify(presignedURL: expired) == "expired")

            // A plain HTTP client downloads the bytes (moto serves presigned GETs only with its auth off).
            try await moto.checkSignatures(false)
            let downloaded = try await testHTTP.execute(CurlRequest(url: url))
            #expect(downloaded.status == 200)
            #expect(downloaded.header("Content-Type") == "image/png")
            let local = try Data(contentsOf: URL(fileURLWithPath: "\(gateway.outputDirectory)/\(filename)"))
            #expect(downloaded.body == Array(local))
            #expect(Digest.hex(Digest.sha256(downloaded.body)) + ".png" == filename)
            let downloadedFile = try await testHTTP.execute(CurlRequest(url: fileURL))
            #expect(downloadedFile.status == 200)
            #expect(downloadedFile.body == file.body)
            #expect(emulatorMetadata(ofPNG: downloadedFile.body)?["texts"]?.arrayValue?.first == "a file in s3")
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func unreachableS3IsA502NamingTheStoreAndTheImageStaysLocal() async throws {
        let closedPort = TestPaths.freePort()
        let environment = [
            "STORAGE": "s3", "S3_ENDPOINT": "http://127.0.0.1:\(closedPort)", "S3_BUCKET": "images",
            "S3_ACCESS_KEY_ID": "AKIDCLOSED", "S3_SECRET_ACCESS_KEY": "closed-port-secret", "S3_FORCE_PATH_STYLE": "true",
        ]
        try await withGateway("s3-down", environment: environment) { gateway, _ in
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "nowhere to go")))
            #expect(response.status == 502)
            let error = try #require(try JSONValue.parse(response.body)["error"])
            #expect(error["code"] == "storage_failed")
            #expect(error["store"] == "s3")
            let message = try #require(error["message"]?.stringValue)
            #expect(message.contains("s3"))
            #expect(message.contains("after 3 attempts"))
            #expect(message.contains("kept in local storage"))
            #expect(!message.contains(gateway.outputDirectory), "no server path reaches the client")
            #expect(!message.contains("closed-port-secret"))
            #expect(!message.contains("\(closedPort)") && !message.contains("127.0.0.1"), "the store's address stays in the log: \(message)")
            #expect(gateway.app.log.contains("object upload failed"))
            // The image is not lost: it is in OUTPUT_DIR, and nginx serves it where the error says.
            let localURL = try #require(error["local_url"]?.stringValue)
            let files = try gateway.storedFiles()
            #expect(files.count == 1)
            #expect(localURL == "/output_images/\(files[0])")
            #expect(message.contains(files[0]))
            let local = try await gateway.get(localURL)
            #expect(local.status == 200)
            #expect(emulatorMetadata(ofPNG: local.body)?["texts"]?.arrayValue?.first == "nowhere to go")
            #expect(gateway.app.log.components(separatedBy: "object upload failed").count - 1 == 3)
            #expect(!gateway.app.log.contains("closed-port-secret"))
        }
    }

    @Test func s3RefusingTheSignatureIsA502WithItsCodeAndNoRetry() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("s3-refused")
        let moto = try await MotoServer.start(directory: directory, http: testHTTP)
        defer { moto.stop() }
        #expect(try await moto.s3("PUT", path: "/refusing-bucket").status == 200)
        try await withGateway("s3-403", environment: s3Environment(moto, bucket: "refusing-bucket", secret: "wrong-secret-value")) { gateway, _ in
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "refused")))
            #expect(response.status == 502)
            let error = try #require(try JSONValue.parse(response.body)["error"])
            #expect(error["store"] == "s3")
            let message = try #require(error["message"]?.stringValue)
            #expect(message.contains("HTTP 403 SignatureDoesNotMatch"), "\(message)")
            #expect(message.contains("after 1 attempt "), "a 403 is not retried: \(message)")
            #expect(try gateway.storedFiles().count == 1)
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func aDrawingResultThisHostNoLongerHasIsSentToItsBucketCopy() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("s3-drawing")
        let moto = try await MotoServer.start(directory: directory, http: testHTTP)
        defer { moto.stop() }
        #expect(try await moto.s3("PUT", path: "/drawings").status == 200)
        try await withGateway("s3-drawing", environment: s3Environment(moto, bucket: "drawings")) { gateway, _ in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            let form = sketchForm(file: Sketches.png(seed: 5), fields: ["session_id": "bucketed"])
            #expect(try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType).status == 200)
            try await waitUntil { try await gateway.get("/api/result/bucketed").status == 200 }
            let local = try await gateway.get("/api/result/bucketed")
            // OUTPUT_RETENTION took the local copy (or another instance with its own OUTPUT_DIR made it).
            for file in try gateway.storedFiles() where file.hasSuffix(".png") { try FileManager.default.removeItem(atPath: "\(gateway.outputDirectory)/\(file)") }
            let moved = try await gateway.get("/api/result/bucketed")
            #expect(moved.status == 302, "\(moved.bodyText)")
            let location = try #require(moved.header("Location"))
            #expect(location.hasPrefix("\(moto.url)/drawings/renders/"), "\(location)")
            #expect(try moto.verify(presignedURL: location) == "valid")
            try await moto.checkSignatures(false)
            #expect(try await testHTTP.execute(CurlRequest(url: location)).body == local.body)
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func aCancelWhileTheImageIsStoredAnswers409AndTheUploadIsNoGPUTime() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("oss-cancel-late")
        let oss = try OSSServer(directory: directory, putDelayMilliseconds: 1500)
        defer { oss.stop() }
        let environment = [
            "ENABLE_OSS": "true", "OSS_ENDPOINT": oss.endpoint, "OSS_BUCKET_NAME": "gw-bucket",
            "OSS_ACCESS_KEY_ID": oss.accessKeyID, "OSS_ACCESS_KEY_SECRET": oss.accessKeySecret,
        ]
        try await withGateway("oss-cancel-late", emulatorArguments: ["--node-delay-ms", "50"], environment: environment) { gateway, _ in
            let bearer = KeyTests.bearer(try KeyTests.createKey(gateway, ["metered"]))
            try await waitUntil { try await gateway.post("/api/jobs", json: .object([:])).status == 401 }
            let submitted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "stored slowly")), headers: bearer)
            let id = try #require(try JSONValue.parse(submitted.body)["id"]?.stringValue, "\(submitted.bodyText)")
            // ComfyUI is done with it; its image is on the way to the store (held there 1.5 s).
            try await waitUntil { try await oss.stats(http: testHTTP)["started"] == 1 }
            let late = try await gateway.get("/api/jobs/\(id)", headers: bearer, method: "DELETE")
            #expect(late.status == 409, "\(late.bodyText)")
            let answer = try JSONValue.parse(late.body)
            #expect(answer["error"]?["code"] == "job_finished")
            #expect(answer["job"]?["status"] == "completed")
            #expect(try await gateway.job(id, headers: bearer)["status"] == "completed")
            // GPU time ends when the image arrives: the upload after it is the gateway's.
            let usage = try JSONValue.parse(try await gateway.get("/api/usage", headers: bearer).body)
            let gpu = try #require(usage["gpu_seconds"]?.doubleValue, "\(usage)")
            #expect(gpu > 0.05 && gpu < 1.4, "three nodes of 50 ms, not the 1.5 s upload: \(usage)")
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func ossUploadsAreSignedAndSignedURLsServeTheImageFor30Days() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("oss")
        // The first upload is answered 503: the bounded retry makes the second one count.
        let oss = try OSSServer(directory: directory, failPuts: 1)
        defer { oss.stop() }
        let environment = [
            "ENABLE_OSS": "true", "OSS_ENDPOINT": oss.endpoint, "OSS_BUCKET_NAME": "gw-bucket", "OSS_BASE_PATH": "comfy_images/",
            "OSS_ACCESS_KEY_ID": oss.accessKeyID, "OSS_ACCESS_KEY_SECRET": oss.accessKeySecret,
        ]
        try await withGateway("oss", environment: environment) { gateway, _ in
            let generated = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "stored in oss")))
            #expect(generated.status == 200, "\(generated.bodyText)")
            let answer = try JSONValue.parse(generated.body)
            let url = try #require(answer["url"]?.stringValue)
            let filename = try #require(answer["filename"]?.stringValue)
            #expect(url.hasPrefix("http://gw-bucket.localhost:\(oss.port)/comfy_images/\(filename)?OSSAccessKeyId=\(oss.accessKeyID)&Expires="))
            #expect(url.contains("&Signature="))
            let expiresIn = try secondsUntil(try #require(answer["expires_at"]?.stringValue))
            #expect(abs(expiresIn - 30 * 86_400) < 120, "expires in \(expiresIn) s")
            let stats = try await oss.stats(http: testHTTP)
            #expect(stats["puts"] == 2)
            #expect(stats["objects"] == .array([.string("gw-bucket/comfy_images/\(filename)")]))

            let downloaded = try await testHTTP.execute(CurlRequest(url: url))
            #expect(downloaded.status == 200)
            #expect(downloaded.body == Array(try Data(contentsOf: URL(fileURLWithPath: "\(gateway.outputDirectory)/\(filename)"))))
            let tampered = url.replacingOccurrences(of: "&Expires=", with: "&Expires=1")
            #expect(try await testHTTP.execute(CurlRequest(url: tampered)).status == 403)
            let signer = OSSSigner(accessKeyID: oss.accessKeyID, accessKeySecret: oss.accessKeySecret)
            let expired = signer.signedURL(scheme: "http", host: "gw-bucket.localhost:\(oss.port)", bucket: "gw-bucket", key: "comfy_images/\(filename)", expires: Int64(Date().timeIntervalSince1970) - 10)
            let refused = try await testHTTP.execute(CurlRequest(url: expired))
            #expect(refused.status == 403)
            #expect(refused.bodyText.contains("expired"))

            let file = try await gateway.post("/api/generate_file", json: Workflows.body(Workflows.txt2img(text: "a file in oss")))
            #expect(file.status == 200)
            let fileURL = try #require(file.header("X-Image-URL"))
            #expect(file.header("X-Image-URL-Expires") != nil)
            #expect(try await testHTTP.execute(CurlRequest(url: fileURL)).body == file.body)
            #expect(!gateway.app.log.contains(oss.accessKeySecret))
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func enableOSSWithAMissingVariableFallsBackToLocalAndSaysWhich() async throws {
        let environment = [
            "ENABLE_OSS": "true", "OSS_ACCESS_KEY_ID": "LTAI-fallback", "OSS_ACCESS_KEY_SECRET": "fallback-secret-value",
            "OSS_ENDPOINT": "oss-cn-hangzhou.aliyuncs.com",
        ]
        try await withGateway("oss-fallback", environment: environment) { gateway, _ in
            let response = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "local after all")))
            #expect(response.status == 200)
            let answer = try JSONValue.parse(response.body)
            #expect(answer["url"]?.stringValue?.hasPrefix("/output_images/") == true)
            #expect(answer["expires_at"] == nil)
            let log = gateway.app.log
            #expect(log.contains("OSS is enabled but not configured: storing images locally"))
            #expect(log.contains("OSS_BUCKET_NAME"))
            #expect(!log.contains("fallback-secret-value"))
        }
    }

    @Test func incompleteS3ConfigurationStopsStartUpNamingTheVariable() throws {
        let directory = try TestPaths.makeTemporaryDirectory("s3-config")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cases: [([String: String], String)] = [
            (["STORAGE": "s3", "S3_ACCESS_KEY_ID": "AKID", "S3_SECRET_ACCESS_KEY": "config-secret"], "invalid configuration: S3_BUCKET: required when STORAGE=s3"),
            (["STORAGE": "s3", "S3_BUCKET": "b", "S3_SECRET_ACCESS_KEY": "config-secret"], "invalid configuration: S3_ACCESS_KEY_ID: required when STORAGE=s3"),
            (["STORAGE": "s3", "S3_BUCKET": "b", "S3_ACCESS_KEY_ID": "AKID"], "invalid configuration: S3_SECRET_ACCESS_KEY: required when STORAGE=s3"),
            (["STORAGE": "s3", "S3_BUCKET": "b", "S3_ACCESS_KEY_ID": "AKID", "S3_SECRET_ACCESS_KEY": "config-secret", "S3_ENDPOINT": "minio:9000"], "invalid configuration: S3_ENDPOINT"),
            (["STORAGE": "gcs"], "invalid configuration: STORAGE: expected local, oss or s3"),
            (["OUTPUT_RETENTION": "a week"], "invalid configuration: OUTPUT_RETENTION"),
        ]
        for (index, (environment, expected)) in cases.enumerated() {
            let app = try appRefusal(in: directory, environment, log: "app-\(index)")
            #expect(app.status == 78, "\(environment)")
            let lines = app.log.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix(expected), "\(app.log)")
            #expect(!app.log.contains("config-secret"))
        }
    }

    @Test func retentionRemovesOnlyExpiredImagesAndStaleTemporaryFiles() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("retention")
        let output = "\(directory)/output"
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let old = String(repeating: "a", count: 64) + ".png"
        let young = String(repeating: "b", count: 64) + ".png"
        let now = Date().timeIntervalSince1970
        for (name, age) in [(old, 7200.0), (young, 600.0), (".tmp-crashed", 7200.0), (".tmp-writing", 60.0), ("keep.txt", 7200.0)] {
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(output)/\(name)"))
            var times = [timespec(tv_sec: Int(now - age), tv_nsec: 0), timespec(tv_sec: Int(now - age), tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, "\(output)/\(name)", &times, 0) == 0)
        }
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: ["OUTPUT_RETENTION": "1h"])
        defer { gateway.stop() }
        try await gateway.waitUntilHealthy()
        // The first sweep runs at start-up.
        try await waitUntil { !FileManager.default.fileExists(atPath: "\(output)/\(old)") }
        try await waitUntil { !FileManager.default.fileExists(atPath: "\(output)/.tmp-crashed") }
        let generated = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "fresh")))
        let fresh = try #require(try JSONValue.parse(generated.body)["filename"]?.stringValue)
        #expect(Set(try gateway.storedFiles()) == [young, ".tmp-writing", "keep.txt", fresh])
        #expect(gateway.app.log.contains("retention sweep"))
        gateway.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
