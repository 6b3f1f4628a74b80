import Foundation

/// Aliyun OSS's V1 signatures: the `Authorization: OSS AccessKeyId:Signature` header of an
/// upload, and the `OSSAccessKeyId`/`Expires`/`Signature` query of a signed GET URL.
///
/// Signature = base64(HMAC-SHA1(AccessKeySecret, VERB \n Content-MD5 \n Content-Type \n
/// Date-or-Expires \n CanonicalizedOSSHeaders CanonicalizedResource)).
public struct OSSSigner: Sendable, CustomStringConvertible {
    public let accessKeyID: String
    private let accessKeySecret: String

    public init(accessKeyID: String, accessKeySecret: String) {
        self.accessKeyID = accessKeyID
        self.accessKeySecret = accessKeySecret
    }

    /// Never shows the secret.
    public var description: String { "OSSSigner(accessKeyID: \(accessKeyID))" }

    /// The text that is signed. `date` is the `Date` header, or the `Expires` seconds of a URL;
    /// `resource` is `/bucket/key` with the key not encoded.
    public static func stringToSign(
        verb: String, contentMD5: String = "", contentType: String = "", date: String, headers: [(String, String)] = [], resource: String
    ) -> String {
        // CanonicalizedOSSHeaders: x-oss-* headers, names lower-cased, sorted, `name:value\n` each.
        let ossHeaders = headers
            .map { (name: $0.0.lowercased(), value: $0.1.trimmingCharacters(in: .whitespaces)) }
            .filter { $0.name.hasPrefix("x-oss-") }
            .sorted { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
            .map { "\($0.name):\($0.value)\n" }
            .joined()
        return "\(verb)\n\(contentMD5)\n\(contentType)\n\(date)\n\(ossHeaders)\(resource)"
    }

    /// base64(HMAC-SHA1(secret, stringToSign)).
    public func signature(_ stringToSign: String) -> String {
        Data(Digest.hmacSHA1(key: Array(accessKeySecret.utf8), message: Array(stringToSign.utf8))).base64EncodedString()
    }

    /// The `Authorization` header value for a request.
    public func authorization(
        verb: String, contentMD5: String = "", contentType: String = "", date: String, headers: [(String, String)] = [], resource: String
    ) -> String {
        let text = Self.stringToSign(verb: verb, contentMD5: contentMD5, contentType: contentType, date: date, headers: headers, resource: resource)
        return "OSS \(accessKeyID):\(signature(text))"
    }

    /// A signed GET URL for `key` in `bucket`, valid until `expires` (seconds since 1970).
    /// - Parameter host: the bucket's host, `bucket.endpoint` (with a port if not the default).
    public func signedURL(scheme: String, host: String, bucket: String, key: String, expires: Int64) -> String {
        let text = Self.stringToSign(verb: "GET", date: String(expires), resource: "/\(bucket)/\(key)")
        let query = "OSSAccessKeyId=\(URIEncoding.encode(accessKeyID))&Expires=\(expires)&Signature=\(URIEncoding.encode(signature(text)))"
        return "\(scheme)://\(host)/\(URIEncoding.encode(key, keepSlash: true))?\(query)"
    }
}
