/// AWS Signature Version 4, as S3 and S3-compatible stores (R2, MinIO, Ceph) check it:
/// header signing for uploads and query-string presigning for GET URLs.
///
/// Paths follow S3's rules: each segment is URI-encoded once and never normalised.
public struct S3Signer: Sendable, CustomStringConvertible {
    /// SigV4 caps a presigned URL at seven days.
    public static let maxPresignedExpiry = 604_800
    /// The payload hash of presigned URLs: the body is not known when the URL is made.
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    public let accessKeyID: String
    private let secretAccessKey: String
    public let region: String
    /// The signing name: `s3` for object storage (AWS's test suite uses `service`).
    public let service: String

    /// What a signature covers, before the signer adds its own headers or query parameters.
    public struct Request: Sendable {
        public var method: String
        /// The `Host` header: `host` or `host:port` for a non-default port.
        public var host: String
        /// The decoded path, starting with `/` (`/bucket/images/abc.png`).
        public var path: String
        /// Decoded query parameters, in any order.
        public var query: [(String, String)]
        /// Headers to sign besides `host` and `x-amz-date`.
        public var headers: [(String, String)]
        /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
        public var payloadHash: String

        public init(method: String, host: String, path: String, query: [(String, String)] = [], headers: [(String, String)] = [], payloadHash: String) {
            self.method = method
            self.host = host
            self.path = path
            self.query = query
            self.headers = headers
            self.payloadHash = payloadHash
        }

        /// The path as it goes on the wire and into the canonical request.
        public var encodedPath: String { URIEncoding.encode(path, keepSlash: true) }
    }

    /// The three texts of a signature, exposed so tests can compare them with AWS's published ones.
    struct Computation: Sendable {
        var canonicalRequest: String
        var stringToSign: String
        var signature: String
        var signedHeaders: String
    }

    public init(accessKeyID: String, secretAccessKey: String, region: String, service: String = "s3") {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.region = region
        self.service = service
    }

    /// Never shows the secret.
    public var description: String { "S3Signer(accessKeyID: \(accessKeyID), region: \(region), service: \(service))" }

    /// The headers to send with `request` signed at `time`: `X-Amz-Date` and `Authorization`.
    public func authorizationHeaders(for request: Request, at time: UTCTimestamp) -> [(String, String)] {
        var signed = request
        signed.headers.append(("X-Amz-Date", time.compact))
        let computation = compute(signed, at: time)
        let authorization = "AWS4-HMAC-SHA256 Credential=\(accessKeyID)/\(scope(time)), SignedHeaders=\(computation.signedHeaders), Signature=\(computation.signature)"
        return [("X-Amz-Date", time.compact), ("Authorization", authorization)]
    }

    /// A presigned URL for `request` (usually a GET), valid `expiresIn` seconds from `time`,
    /// clamped to 1...604800 as SigV4 demands. Only `host` is signed.
    public func presignedURL(for request: Request, scheme: String, at time: UTCTimestamp, expiresIn: Int) -> String {
        let signed = presignedRequest(request, at: time, expiresIn: expiresIn)
        let computation = compute(signed, at: time)
        return "\(scheme)://\(request.host)\(request.encodedPath)?\(canonicalQuery(signed.query))&X-Amz-Signature=\(computation.signature)"
    }

    /// `request` with the `X-Amz-*` query parameters of a presigned URL.
    func presignedRequest(_ request: Request, at time: UTCTimestamp, expiresIn: Int) -> Request {
        var signed = request
        signed.headers = []
        signed.payloadHash = Self.unsignedPayload
        signed.query += [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "\(accessKeyID)/\(scope(time))"),
            ("X-Amz-Date", time.compact),
            ("X-Amz-Expires", String(min(max(expiresIn, 1), Self.maxPresignedExpiry))),
            ("X-Amz-SignedHeaders", "host"),
        ]
        return signed
    }

    /// Canonical request, string to sign and signature of a request whose headers or query
    /// already carry the date.
    func compute(_ request: Request, at time: UTCTimestamp) -> Computation {
        var headers: [(name: String, value: String)] = [("host", request.host)]
        headers += request.headers.map { (name: $0.0.lowercased(), value: Self.trimmedHeaderValue($0.1)) }
        var names: [String] = []
        var values: [String: [String]] = [:]
        for header in headers {
            if values[header.name] == nil { names.append(header.name) }
            values[header.name, default: []].append(header.value)
        }
        names.sort()
        let canonicalHeaders = names.map { "\($0):\(values[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let canonicalRequest = [
            request.method,
            request.encodedPath,
            canonicalQuery(request.query),
            canonicalHeaders,
            signedHeaders,
            request.payloadHash,
        ].joined(separator: "\n")
        let stringToSign = [
            "AWS4-HMAC-SHA256",
            time.compact,
            scope(time),
            Digest.hex(Digest.sha256(Array(canonicalRequest.utf8))),
        ].joined(separator: "\n")
        let signature = Digest.hex(Digest.hmacSHA256(key: signingKey(time), message: Array(stringToSign.utf8)))
        return Computation(canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature, signedHeaders: signedHeaders)
    }

    /// `20150830/us-east-1/service/aws4_request`.
    func scope(_ time: UTCTimestamp) -> String {
        "\(time.dateStamp)/\(region)/\(service)/aws4_request"
    }

    private func signingKey(_ time: UTCTimestamp) -> [UInt8] {
        var key = Digest.hmacSHA256(key: Array("AWS4\(secretAccessKey)".utf8), message: Array(time.dateStamp.utf8))
        for part in [region, service, "aws4_request"] {
            key = Digest.hmacSHA256(key: key, message: Array(part.utf8))
        }
        return key
    }

    /// Parameters encoded, then sorted by name and value (byte order, as AWS specifies).
    private func canonicalQuery(_ query: [(String, String)]) -> String {
        query
            .map { (URIEncoding.encode($0.0), URIEncoding.encode($0.1)) }
            .sorted { $0.0 == $1.0 ? Array($0.1.utf8).lexicographicallyPrecedes(Array($1.1.utf8)) : Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// Leading and trailing spaces removed, inner runs of spaces collapsed to one.
    private static func trimmedHeaderValue(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }
}
