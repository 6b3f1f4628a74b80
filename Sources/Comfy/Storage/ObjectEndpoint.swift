import Foundation

/// The base URL of an object-storage API: `https://s3.eu-west-1.amazonaws.com`,
/// `http://127.0.0.1:9000`, or a bare `oss-cn-hangzhou.aliyuncs.com` (HTTPS is assumed).
struct ObjectEndpoint: Sendable, Equatable {
    var scheme: String
    /// `host` or `host:port`, as sent in the `Host` header.
    var hostHeader: String
    /// The host name alone (brackets kept for IPv6 literals).
    var hostName: String
    /// A path prefix before bucket or key: `""` or `/something`, never ending in `/`.
    var basePath: String

    init?(_ text: String) {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        scheme = "https"
        if let separator = rest.range(of: "://") {
            scheme = rest[..<separator.lowerBound].lowercased()
            rest = rest[separator.upperBound...]
        }
        guard scheme == "http" || scheme == "https" else { return nil }
        let authority = rest.prefix { $0 != "/" }
        var path = String(rest.dropFirst(authority.count))
        while path.hasSuffix("/") { path.removeLast() }
        guard !authority.isEmpty, !authority.contains("@"), !rest.contains("?"), !rest.contains("#"), !rest.contains(" ") else { return nil }
        hostHeader = String(authority)
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            hostName = String(authority[...close])
        } else {
            hostName = String(authority.prefix { $0 != ":" })
        }
        guard !hostName.isEmpty else { return nil }
        // The scheme's own port is left out, as curl and browsers leave it out of `Host`: a
        // signature over `host:443` would not match what the store receives.
        let port = authority.dropFirst(hostName.count)
        if (scheme == "https" && port == ":443") || (scheme == "http" && port == ":80") { hostHeader = hostName }
        basePath = path
    }

    /// Whether `bucket.host` can name a virtual host: not an IP literal, not a single label.
    var allowsSubdomains: Bool {
        guard hostName.contains("."), !hostName.hasPrefix("[") else { return false }
        return !hostName.allSatisfy { $0.isNumber || $0 == "." }
    }

    /// `scheme://host/path` for an already-encoded path.
    func url(host: String, encodedPath: String) -> String {
        "\(scheme)://\(host)\(encodedPath)"
    }
}
