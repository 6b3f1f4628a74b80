import Foundation
import Logging

/// Images in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, Ceph), uploaded with
/// SigV4 and handed out as presigned GET URLs, or as plain URLs under a public (CDN) base.
///
/// Every image is first written to local storage, so a failed upload loses nothing: the
/// error then says where the local copy is.
public struct S3ImageStore: ImageStore {
    /// Where and how to reach the bucket (`STORAGE=s3` and the `S3_*` variables).
    public struct Configuration: Sendable, CustomStringConvertible {
        /// Scheme, host, optional port and optional base path of the S3 API (`S3_ENDPOINT`).
        public var endpoint: String
        public var region: String
        public var bucket: String
        /// Prepended to `<sha256>.<ext>`; empty, or ending in `/`.
        public var prefix: String
        public var accessKeyID: String
        public var secretAccessKey: String
        /// `endpoint/bucket/key` instead of `bucket.endpoint/key` (MinIO, Ceph, moto).
        public var forcePathStyle: Bool
        /// A CDN or public bucket URL: plain `publicBaseURL/key` URLs instead of presigned ones.
        public var publicBaseURL: String?
        /// Lifetime of presigned URLs in seconds; SigV4 allows at most 7 days.
        public var urlExpiry: Int

        public init(
            endpoint: String, region: String, bucket: String, prefix: String = "", accessKeyID: String, secretAccessKey: String,
            forcePathStyle: Bool = false, publicBaseURL: String? = nil, urlExpiry: Int = S3Signer.maxPresignedExpiry
        ) {
            self.endpoint = endpoint
            self.region = region
            self.bucket = bucket
            self.prefix = ObjectKey.normalizedPrefix(prefix)
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
            self.forcePathStyle = forcePathStyle
            self.publicBaseURL = publicBaseURL.map { ObjectKey.trimmingTrailingSlashes($0) }
            self.urlExpiry = min(max(urlExpiry, 1), S3Signer.maxPresignedExpiry)
        }

        /// Never shows the secret.
        public var description: String {
            "S3(endpoint: \(endpoint), region: \(region), bucket: \(bucket), prefix: \(prefix), accessKeyID: \(accessKeyID), forcePathStyle: \(forcePathStyle))"
        }
    }

    public let configuration: Configuration
    private let local: LocalImageStore
    private let http: CurlHTTPClient
    private let retry: UploadRetry
    private let logger: Logger
    private let now: @Sendable () -> Date
    private let signer: S3Signer
    private let endpoint: ObjectEndpoint

    /// Whether `text` is usable as `S3_ENDPOINT`: `http(s)://host[:port][/path]`.
    public static func isValidEndpoint(_ text: String) -> Bool {
        text.contains("://") && ObjectEndpoint(text) != nil
    }

    /// - Parameters:
    ///   - local: where every image is kept first.
    ///   - now: the wall clock signatures are made at (tests pass a fixed one).
    public init(
        configuration: Configuration, local: LocalImageStore, http: CurlHTTPClient, retry: UploadRetry = UploadRetry(),
        logger: Logger, now: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        guard let endpoint = ObjectEndpoint(configuration.endpoint) else {
            throw StorageError(store: "s3", message: "S3 endpoint \"\(configuration.endpoint)\" is not an http(s)://host[:port] URL")
        }
        self.configuration = configuration
        self.local = local
        self.http = http
        self.retry = retry
        self.logger = logger
        self.now = now
        self.endpoint = endpoint
        signer = S3Signer(accessKeyID: configuration.accessKeyID, secretAccessKey: configuration.secretAccessKey, region: configuration.region)
    }

    public func store(_ bytes: [UInt8], mimeType: String) async throws -> StoredImage {
        let kept = try await local.store(bytes, mimeType: mimeType)
        let key = configuration.prefix + kept.filename
        let payloadHash = Digest.hex(Digest.sha256(bytes))
        try await retry.upload(key, kept: kept, store: "s3", bucket: configuration.bucket, local: local, logger: logger) {
            await upload(bytes, key: key, mimeType: mimeType, payloadHash: payloadHash)
        }
        if let base = configuration.publicBaseURL {
            return StoredImage(filename: kept.filename, url: "\(base)/\(URIEncoding.encode(key, keepSlash: true))", mimeType: mimeType)
        }
        let time = UTCTimestamp(now())
        let url = signer.presignedURL(for: request(method: "GET", key: key, payloadHash: S3Signer.unsignedPayload), scheme: endpoint.scheme, at: time, expiresIn: configuration.urlExpiry)
        return StoredImage(filename: kept.filename, url: url, mimeType: mimeType, expiresAt: UTCTimestamp(epochSeconds: time.epochSeconds + Int64(configuration.urlExpiry)).date)
    }

    /// One signed PUT of the object; `nil` when the store took it.
    private func upload(_ bytes: [UInt8], key: String, mimeType: String, payloadHash: String) async -> UploadFailure? {
        var signed = request(method: "PUT", key: key, payloadHash: payloadHash)
        signed.headers = [("Content-Type", mimeType), ("x-amz-content-sha256", payloadHash)]
        let headers = signed.headers + signer.authorizationHeaders(for: signed, at: UTCTimestamp(now()))
        let request = CurlRequest(method: "PUT", url: endpoint.url(host: signed.host, encodedPath: signed.encodedPath), headers: headers, body: bytes, timeout: .seconds(60))
        return await UploadRetry.send(request, with: http)
    }

    /// The request for `key`, path-style or virtual-hosted as configured.
    private func request(method: String, key: String, payloadHash: String) -> S3Signer.Request {
        // A bucket cannot be a subdomain of an IP address or of a bare name like localhost.
        if configuration.forcePathStyle || !endpoint.allowsSubdomains {
            return S3Signer.Request(method: method, host: endpoint.hostHeader, path: "\(endpoint.basePath)/\(configuration.bucket)/\(key)", payloadHash: payloadHash)
        }
        return S3Signer.Request(method: method, host: "\(configuration.bucket).\(endpoint.hostHeader)", path: "\(endpoint.basePath)/\(key)", payloadHash: payloadHash)
    }
}
