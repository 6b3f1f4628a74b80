import Foundation

/// nginx's side of the configuration, read by the same reader as the app's: where the rendered
/// site goes, what it listens on, and the limits and paths it shares with the app.
///
/// Variables: `PORT` (8000), `RUN_DIR` (`./.run`), `MAX_BODY` (`32m`, nginx's
/// `client_max_body_size`), `TLS_CERT` and `TLS_KEY` (PEM files; both or neither),
/// `HTTP_REDIRECT_PORT` (with TLS: plain HTTP there is redirected to HTTPS),
/// `METRICS_ALLOW` (`127.0.0.1 ::1`), `REAL_IP_FROM` (none), `STATIC_DIR` (`./static`), `NGINX_TEMPLATE_DIR`
/// (`./nginx`), plus the app's `FCGI_SOCKET`, `WS_SOCKET`, `OUTPUT_DIR` and `GENERATE_TIMEOUT`.
public struct SiteConfiguration: Sendable {
    public var port: Int
    /// Absolute: sockets, the rendered nginx configuration, logs.
    public var runDirectory: String
    /// nginx's size syntax (`32m`).
    public var maxBody: String
    /// `MAX_BODY` in bytes.
    public var maxBodyBytes: Int
    public var tls: (certificate: String, key: String)?
    /// With TLS: a plain-HTTP port that redirects every request to HTTPS (`HTTP_REDIRECT_PORT`).
    public var httpRedirectPort: Int?
    /// Addresses or CIDRs that may read `/metrics`.
    public var metricsAllow: [String]
    /// Proxies in front of nginx whose `X-Forwarded-For` names the client (`REAL_IP_FROM`):
    /// else every client behind them has their address, for the per-address limits and for
    /// `METRICS_ALLOW`.
    public var realIPFrom: [String]
    public var staticDirectory: String
    public var templateDirectory: String
    /// Anonymous painters, per client (an address, or an IPv6 /64): requests a second to
    /// `/api/sketch` and `/api/result/` (`DRAWING_RATE`, 20; 0 = no limit), drawing WebSockets at
    /// once (`DRAWING_CONNECTIONS`, 100; 0 = no limit).
    public var drawingRate: Int
    public var drawingConnections: Int
    /// Job event streams (`/api/jobs/{id}/events`) one client holds at once (`EVENT_STREAMS`,
    /// 200; 0 = no limit): each holds two of nginx's connections for as long as its job runs.
    public var eventStreams: Int
    /// FastCGI requests one client has in nginx at once (`API_CONNECTIONS`, 128; 0 = no limit):
    /// each holds one of the app's threads, and its body a temporary file while it arrives, so a
    /// client trickling bodies must not hold them all.
    public var apiConnections: Int

    init(_ environment: Environment) throws {
        port = try environment.integer("PORT", default: 8000, range: 1...65535)
        runDirectory = Self.absolute(environment["RUN_DIR"] ?? "./.run")
        maxBody = environment["MAX_BODY"] ?? "32m"
        guard let bytes = Self.bytes(ofNginxSize: maxBody) else {
            throw ConfigurationError(variable: "MAX_BODY", problem: "expected a size like 32m, 512k or 1g, got \"\(maxBody)\"")
        }
        maxBodyBytes = bytes
        switch (environment["TLS_CERT"], environment["TLS_KEY"]) {
        case (nil, nil):
            tls = nil
        case (let certificate?, let key?):
            for (variable, path) in [("TLS_CERT", certificate), ("TLS_KEY", key)] where !FileManager.default.isReadableFile(atPath: path) {
                throw ConfigurationError(variable: variable, problem: "cannot read \"\(path)\"")
            }
            tls = (Self.absolute(certificate), Self.absolute(key))
        case (nil, _):
            throw ConfigurationError(variable: "TLS_CERT", problem: "TLS_KEY is set, so TLS_CERT must be too")
        case (_, nil):
            throw ConfigurationError(variable: "TLS_KEY", problem: "TLS_CERT is set, so TLS_KEY must be too")
        }
        metricsAllow = try Self.addresses(environment, "METRICS_ALLOW", default: "127.0.0.1 ::1")
        realIPFrom = try Self.addresses(environment, "REAL_IP_FROM", default: "")
        staticDirectory = Self.absolute(environment["STATIC_DIR"] ?? "./static")
        templateDirectory = Self.absolute(environment["NGINX_TEMPLATE_DIR"] ?? "./nginx")
        if environment["HTTP_REDIRECT_PORT"].map({ !$0.isEmpty }) == true {
            let redirect = try environment.integer("HTTP_REDIRECT_PORT", default: 0, range: 1...65535)
            guard tls != nil else { throw ConfigurationError(variable: "HTTP_REDIRECT_PORT", problem: "redirects to HTTPS, so TLS_CERT and TLS_KEY must be set") }
            guard redirect != port else { throw ConfigurationError(variable: "HTTP_REDIRECT_PORT", problem: "must differ from PORT (\(port))") }
            httpRedirectPort = redirect
        }
        for (variable, path) in [("RUN_DIR", runDirectory), ("STATIC_DIR", staticDirectory)] + (tls.map { [("TLS_CERT", $0.certificate), ("TLS_KEY", $0.key)] } ?? []) {
            try Self.checkQuotable(path, variable: variable)
        }
        drawingRate = try environment.integer("DRAWING_RATE", default: 20, range: 0...100_000)
        // nginx takes connection limits below 65536.
        drawingConnections = try environment.integer("DRAWING_CONNECTIONS", default: 100, range: 0...65535)
        eventStreams = try environment.integer("EVENT_STREAMS", default: 200, range: 0...65535)
        apiConnections = try environment.integer("API_CONNECTIONS", default: 128, range: 0...65535)
    }

    /// A list of addresses or CIDRs, separated by spaces or commas.
    static func addresses(_ environment: Environment, _ name: String, default fallback: String) throws -> [String] {
        let addresses = (environment[name] ?? fallback).split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        for address in addresses where !isAddressOrCIDR(address) {
            throw ConfigurationError(variable: name, problem: "\"\(address)\" is not an address or CIDR")
        }
        return addresses
    }

    /// `path` made absolute against the working directory (nginx needs absolute paths).
    /// nginx's configuration quotes paths (so that one may hold spaces): a quote, a backslash,
    /// `$` (nginx would read a variable there) or a control character cannot be in one.
    static func checkQuotable(_ path: String, variable: String) throws {
        guard !path.unicodeScalars.contains(where: { $0 == "\"" || $0 == "\\" || $0 == "$" || $0.value < 0x20 || $0.value == 0x7F }) else {
            throw ConfigurationError(variable: variable, problem: "\"\(path)\" holds a character nginx's configuration cannot quote (\", \\, $ or a control character)")
        }
    }

    static func absolute(_ path: String) -> String {
        let url = URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true))
        return url.standardizedFileURL.path
    }

    /// nginx's size syntax: a number with an optional `k`, `m` or `g`.
    static func bytes(ofNginxSize text: String) -> Int? {
        let units: [Character: Int] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
        var digits = Substring(text.lowercased())
        var scale = 1
        if let last = digits.last, let unit = units[last] {
            scale = unit
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = Int(digits), value > 0, value <= (1 << 40) / scale else { return nil }
        return value * scale
    }

    static func isAddressOrCIDR(_ text: String) -> Bool {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = parts.first, !address.isEmpty else { return false }
        var v4 = in_addr()
        var v6 = in6_addr()
        let isV4 = inet_pton(AF_INET, String(address), &v4) == 1
        guard isV4 || inet_pton(AF_INET6, String(address), &v6) == 1 else { return false }
        guard parts.count == 2 else { return true }
        guard let bits = Int(parts[1]) else { return false }
        return (0...(isV4 ? 32 : 128)).contains(bits)
    }
}
