import Foundation
import Logging

/// Images in an Aliyun OSS bucket, uploaded with OSS's V1 header signature and handed out
/// as signed GET URLs (30 days by default, as the original generate API does).
///
/// Every image is first written to local storage, so a failed upload loses nothing: the
/// error then says where the local copy is.
public struct OSSImageStore: ImageStore {
    /// The original generate API's settings: `OSS_ACCESS_KEY_ID`, `OSS_ACCESS_KEY_SECRET`, `OSS_ENDPOINT`,
    /// `OSS_BUCKET_NAME`, `OSS_BASE_PATH`.
    public struct Configuration: Sendable, CustomStringConvertible {
        /// `oss-cn-hangzhou.aliyuncs.com`, with or without `https://`; the bucket becomes a subdomain.
        public var endpoint: String
        public var bucket: String
        /// Prepended to `<sha256>.<ext>`; empty, or ending in `/`.
        public var basePath: String
        public var accessKeyID: String
        public var accessKeySecret: String
        /// Lifetime of signed URLs in seconds.
        public var urlExpiry: Int

        public init(endpoint: String, bucket: String, basePath: String = "", accessKeyID: String, accessKeySecret: String, urlExpiry: Int = 30 * 86_400) {
            self.endpoint = endpoint
            self.bucket = bucket
            self.basePath = ObjectKey.normalizedPrefix(basePath)
            self.accessKeyID = accessKeyID
            self.accessKeySecret = accessKeySecret
            self.urlExpiry = max(urlExpiry, 1)
        }

        /// Never shows the secret.
        public var description: String {
            "OSS(endpoint: \(endpoint), bucket: \(bucket), basePath: \(basePath), accessKeyID: \(accessKeyID))"
        }
    }

    public let configuration: Configuration
    private let local: LocalImageStore
    private let http: CurlHTTPClient
    private let retry: UploadRetry
    private let logger: Logger
    private let now: @Sendable () -> Date
    private let signer: OSSSigner
    private let endpoint: ObjectEndpoint

    /// Whether `text` is usable as `OSS_ENDPOINT`: `host[:port]` or `http(s)://host[:port]`.
    public static func isValidEndpoint(_ text: String) -> Bool {
        ObjectEndpoint(text).map { $0.basePath.isEmpty } ?? false
    }

    /// - Parameters:
    ///   - local: where every image is kept first.
    ///   - now: the wall clock signatures are made at (tests pass a fixed one).
    public init(
        configuration: Configuration, local: LocalImageStore, http: CurlHTTPClient, retry: UploadRetry = UploadRetry(),
        logger: Logger, now: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        guard let endpoint = ObjectEndpoint(configuration.endpoint), endpoint.basePath.isEmpty else {
            throw StorageError(store: "oss", message: "OSS endpoint \"\(configuration.endpoint)\" is not a host[:port] or http(s)://host[:port]")
        }
        self.configuration = configuration
        self.local = local
        self.http = http
        self.retry = retry
        self.logger = logger
        self.now = now
        self.endpoint = endpoint
        signer = OSSSigner(accessKeyID: configuration.accessKeyID, accessKeySecret: configuration.accessKeySecret)
    }

    public func store(_ bytes: [UInt8], mimeType: String) async throws -> StoredImage {
        let kept = try await local.store(bytes, mimeType: mimeType)
        let key = configuration.basePath + kept.filename
        try await retry.upload(key, kept: kept, store: "oss", bucket: configuration.bucket, local: local, logger: logger) {
            await upload(bytes, key: key, mimeType: mimeType)
        }
        let expires = UTCTimestamp(now()).epochSeconds + Int64(configuration.urlExpiry)
        let url = signer.signedURL(scheme: endpoint.scheme, host: bucketHost, bucket: configuration.bucket, key: key, expires: expires)
        return StoredImage(filename: kept.filename, url: url, mimeType: mimeType, expiresAt: UTCTimestamp(epochSeconds: expires).date)
    }

    /// `bucket.endpoint`: OSS addresses buckets only as virtual hosts.
    private var bucketHost: String { "\(configuration.bucket).\(endpoint.hostHeader)" }

    /// One signed PUT of the object; `nil` when OSS took it.
    private func upload(_ bytes: [UInt8], key: String, mimeType: String) async -> UploadFailure? {
        let date = UTCTimestamp(now()).httpDate
        let authorization = signer.authorization(verb: "PUT", contentType: mimeType, date: date, resource: "/\(configuration.bucket)/\(key)")
        let request = CurlRequest(
            method: "PUT",
            url: endpoint.url(host: bucketHost, encodedPath: "/" + URIEncoding.encode(key, keepSlash: true)),
            headers: [("Date", date), ("Content-Type", mimeType), ("Authorization", authorization)],
            body: bytes,
            timeout: .seconds(60)
        )
        return await UploadRetry.send(request, with: http)
    }
}
