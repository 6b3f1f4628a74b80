import Foundation

/// Which browser pages may use the gateway: their `Origin` (scheme, host and port) must be the
/// configured public origin (`SERVER_BASE_URL`), one of a configured list, or the page's own
/// origin where the `Host` it reached us by is an IP address or `localhost`.
///
/// Any other name must be configured: a `Host` of `evil.example` that DNS points at this
/// machine (DNS rebinding) makes `Origin: http://evil.example` look like the page's own.
public struct OriginPolicy: Sendable, Equatable {
    /// Normalised origins allowed besides the own one.
    public private(set) var allowed: Set<String>
    /// `*` was listed: any origin.
    public private(set) var allowsAny: Bool
    /// `SERVER_BASE_URL`'s origin, when set.
    public private(set) var publicOrigin: String?

    /// Why a configured origin was not understood.
    public struct InvalidOrigin: Error, Sendable, Equatable {
        public var text: String
    }

    /// - Parameters:
    ///   - publicBaseURL: `SERVER_BASE_URL` (empty: none); only its origin counts.
    ///   - allowed: `scheme://host[:port]` entries, or `*` for any origin.
    public init(publicBaseURL: String = "", allowed: [String] = []) throws(InvalidOrigin) {
        var origins = Set<String>()
        var any = false
        for entry in allowed {
            if entry == "*" {
                any = true
            } else if let origin = Self.normalized(entry) {
                origins.insert(origin)
            } else {
                throw InvalidOrigin(text: entry)
            }
        }
        self.allowed = origins
        self.allowsAny = any
        if publicBaseURL.isEmpty {
            publicOrigin = nil
        } else if let origin = Self.normalized(publicBaseURL, allowingPath: true) {
            publicOrigin = origin
        } else {
            throw InvalidOrigin(text: publicBaseURL)
        }
    }

    /// Whether a page at `origin` may use us, reached by `scheme` with the `Host` header `host`.
    public func allows(origin: String, scheme: String, host: String?) -> Bool {
        if allowsAny { return true }
        guard let origin = Self.normalized(origin) else { return false }  // `null`, garbage
        if allowed.contains(origin) || origin == publicOrigin { return true }
        guard let host, let own = Self.normalized("\(scheme.lowercased())://\(host)"), origin == own else { return false }
        return Self.isAddressOrLocalhost(URLComponents(string: own)?.host ?? "")
    }

    /// Whether the origin is one that `allows` accepts without looking at `Host` (listed or public).
    public func lists(_ origin: String) -> Bool {
        if allowsAny { return true }
        guard let origin = Self.normalized(origin) else { return false }
        return allowed.contains(origin) || origin == publicOrigin
    }

    /// `scheme://host[:port]` lower-cased, without a default port; `nil` for anything that is
    /// not an http(s) origin (a path, user info, a query, no host).
    public static func normalized(_ text: String, allowingPath: Bool = false) -> String? {
        guard let components = URLComponents(string: text.trimmingCharacters(in: .whitespaces)),
              let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = components.host?.lowercased(), !host.isEmpty,
              components.user == nil, components.password == nil, components.query == nil, components.fragment == nil
        else { return nil }
        if !allowingPath, !(components.path.isEmpty || components.path == "/") { return nil }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        let defaultPort = scheme == "https" ? 443 : 80
        if let port = components.port, port != defaultPort {
            return "\(scheme)://\(bracketed):\(port)"
        }
        return "\(scheme)://\(bracketed)"
    }

    /// An IPv4 or IPv6 literal, or `localhost`: names that DNS cannot point elsewhere.
    static func isAddressOrLocalhost(_ host: some StringProtocol) -> Bool {
        isIPAddressLiteral(host) || host.lowercased() == "localhost"
    }
}
