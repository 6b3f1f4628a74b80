import Foundation

/// The names the gateway answers its API under (the `Host` a request was sent to): IP
/// addresses, `localhost`, the host of `SERVER_BASE_URL`, and `ALLOWED_HOSTS`. The origins
/// allowed to call it are other sites, not names of the gateway: their hosts are not.
///
/// Another name can be another site's. A page at `evil.example` whose DNS answer then moves to
/// this machine (DNS rebinding) calls the API as its own origin: a browser sends no `Origin`
/// with a same-origin `GET`, so the origin checks never see it, and the gateway's answers (jobs,
/// results, workflows and their defaults, usage) are that page's to read. With keys on, the
/// page has no key; with them off, only the name it had to send gives it away.
public struct HostPolicy: Sendable, Equatable {
    private var names: Set<String>
    /// `.example.com` entries, kept with their dot: the name itself and every name below it.
    private var domains: [String]
    private var allowsAny: Bool

    /// Why an `ALLOWED_HOSTS` entry was not understood.
    public struct InvalidHost: Error, Sendable, Equatable {
        public var text: String
    }

    /// - Parameters:
    ///   - allowed: names (`gateway`, `img.example.com`), domains (`.example.com`), or `*`.
    ///   - api: the origins whose pages may call the API: `SERVER_BASE_URL`'s host is allowed,
    ///     and any name when any page may read the API anyway (CORS `*`).
    public init(allowed: [String] = [], api: OriginPolicy? = nil) throws(InvalidHost) {
        names = []
        domains = []
        allowsAny = api?.allowsAny ?? false
        for entry in allowed {
            if entry == "*" {
                allowsAny = true
                continue
            }
            let name = Self.normalized(entry)
            guard let name, !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") }) else {
                throw InvalidHost(text: entry)
            }
            if name.hasPrefix(".") { domains.append(name) } else { names.insert(name) }
        }
        if let origin = api?.publicOrigin, let host = URLComponents(string: origin)?.host, let name = Self.normalized(host) {
            names.insert(name)
        }
    }

    /// Whether a request sent to `host` (the `Host` header, with or without a port) is answered.
    /// One without `Host` is (HTTP/1.0, no browser).
    public func allows(host: String?) -> Bool {
        guard let host, !allowsAny else { return true }
        // Every request asks: the common forms (an address, a configured name as sent) first,
        // without the copies that normalizing makes.
        let sent = Self.withoutPort(host)
        if isIPAddressLiteral(sent) || names.contains(String(sent)) { return true }
        guard let name = Self.normalized(sent) else { return false }
        if OriginPolicy.isAddressOrLocalhost(name) || names.contains(name) { return true }
        return domains.contains { name.hasSuffix($0) || name == $0.dropFirst() }
    }

    /// The name of a `Host` value: `[::1]:8000` → `[::1]`, `gw.example:8000` → `gw.example`.
    public static func withoutPort(_ host: String) -> Substring {
        if host.hasPrefix("[") {
            guard let end = host.firstIndex(of: "]") else { return host[...] }
            return host[...end]
        }
        guard let colon = host.lastIndex(of: ":") else { return host[...] }
        return host[..<colon]
    }

    /// Lower-cased, without the root's trailing dot (`example.com.` is `example.com`).
    private static func normalized(_ name: some StringProtocol) -> String? {
        var name = name.trimmingCharacters(in: .whitespaces).lowercased()
        if name.hasSuffix("."), name.count > 1 { name.removeLast() }
        return name.isEmpty ? nil : name
    }
}
