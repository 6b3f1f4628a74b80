/// The base URL of one ComfyUI server, e.g. `http://gpu1:8188`.
public struct ComfyServerURL: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let port: Int
    /// Path prefix without trailing slash, for a ComfyUI behind a reverse proxy (`""` usually).
    public let basePath: String
    /// `http://host:port/prefix`, made once: `/healthz` shows it on every call.
    public let description: String

    /// Parses `http://host[:port][/prefix]`; `nil` for anything else (no https: the WebSocket
    /// client speaks plain TCP, so ComfyUI must sit on a private network).
    public init?(_ text: String) {
        guard text.hasPrefix("http://") else { return nil }
        var rest = text.dropFirst("http://".count)
        var path = ""
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[slash...])
            rest = rest[..<slash]
        }
        while path.hasSuffix("/") { path.removeLast() }
        var host = String(rest)
        var port = 80
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let parsed = Int(rest[rest.index(after: colon)...]), (1...65535).contains(parsed) else { return nil }
            port = parsed
            host = String(rest[..<colon])
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains("@"), host.allSatisfy({ $0.isLetter || $0.isNumber || ".-:".contains($0) }) else { return nil }
        self.host = host
        self.port = port
        self.basePath = path
        let shownHost = host.utf8.contains(UInt8(ascii: ":")) ? "[\(host)]" : host
        description = "http://\(shownHost):\(port)\(path)"
    }

    /// An HTTP URL for `path` (which starts with `/`) on this server.
    public func http(_ path: String) -> String { description + path }
}
