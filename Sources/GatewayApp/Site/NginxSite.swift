import Comfy
import Foundation

/// The nginx configuration of one run, rendered from `nginx/` (templates with `@NAME@`
/// placeholders) with the values of the app's own configuration, then checked with `nginx -t`.
/// Nothing else renders it, so nginx and the app never disagree on a port, a path or a timeout.
public struct NginxSite: Sendable {
    public let configuration: GatewayConfiguration

    public init(configuration: GatewayConfiguration) {
        self.configuration = configuration
    }

    /// The templates, relative to the template directory.
    static let templates = [
        "nginx.conf", "conf.d/gateway.conf", "snippets/fastcgi-gateway.conf", "snippets/websocket-proxy.conf", "snippets/security-headers.conf",
    ]

    /// Where the rendered `nginx.conf` is; nginx's prefix is its folder.
    public var configPath: String { "\(prefix)/nginx.conf" }
    public var prefix: String { "\(configuration.site.runDirectory)/nginx" }
    public var errorLog: String { "\(configuration.site.runDirectory)/logs/error.log" }

    /// Why the site could not be rendered or checked.
    public struct RenderError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The placeholder values.
    func values(nginxVersion: String) -> [String: String] {
        let site = configuration.site
        var listen = "\(site.port)"
        var tls = ""
        if let (certificate, key) = site.tls {
            // nginx before 1.25 (Debian 12 has 1.22) takes http2 as a listen parameter, not `http2 on;`.
            let old = nginxVersion.split(separator: ".").prefix(2).compactMap { Int($0) }.lexicographicallyPrecedes([1, 25])
            listen = old ? "\(site.port) ssl http2" : "\(site.port) ssl"
            // Mozilla's intermediate profile without DHE: TLS 1.3, and 1.2 with ECDHE and AEAD ciphers only.
            tls = "ssl_certificate \"\(certificate)\"; ssl_certificate_key \"\(key)\"; ssl_protocols TLSv1.2 TLSv1.3; "
                + "ssl_ciphers \(Self.tls12Ciphers); ssl_prefer_server_ciphers off; ssl_session_timeout 1d; ssl_session_cache shared:gateway_tls:10m; "
                + "ssl_session_tickets off;" + (old ? "" : " http2 on;")
        }
        // A generate call waits up to GENERATE_TIMEOUT; nginx must wait a little longer than the app.
        let readTimeout = configuration.generateTimeout.components.seconds + 30
        return [
            "RUN_DIR": site.runDirectory,
            // As root without a user that reaches the sockets, the workers stay root: nginx's default (nobody) would not reach them either.
            "USER_DIRECTIVE": workers.map { "user \($0.user) \($0.group);" } ?? (getuid() == 0 ? "user \(Self.currentUser);" : ""),
            "HSTS": site.tls == nil ? "" : #"add_header Strict-Transport-Security "max-age=31536000" always;"#,
            "CSP_PAGE": Self.contentSecurityPolicy(page: "\(site.staticDirectory)/index.html"),
            "CSP_DOCS": Self.contentSecurityPolicy(page: "\(site.staticDirectory)/docs.html"),
            "LISTEN": listen,
            "TLS": tls,
            // 308 keeps the method and body of an API call; the address keeps the client's host name.
            "REDIRECT_SERVER": site.httpRedirectPort.map { redirect in
                "server { listen \(redirect); server_name _; return 308 https://$host\(site.port == 443 ? "" : ":\(site.port)")$request_uri; }"
            } ?? "",
            "METRICS_ALLOW": site.metricsAllow.map { "allow \($0);" }.joined(separator: " "),
            "OPERATOR_ADDRESSES": site.metricsAllow.map { "\($0) 1;" }.joined(separator: " "),
            // The client's address from a trusted proxy's X-Forwarded-For: the last entry not
            // itself a trusted proxy (entries before it are the client's own claims).
            "REAL_IP": site.realIPFrom.isEmpty ? "" : site.realIPFrom.map { "set_real_ip_from \($0);" }.joined(separator: " ")
                + " real_ip_header X-Forwarded-For; real_ip_recursive on;",
            "FCGI_SERVER": ListenAddress(configuration.socketPath).nginxServer,
            "WS_SERVER": ListenAddress(configuration.webSocketPath).nginxServer,
            "OUTPUT_DIR": SiteConfiguration.absolute(configuration.outputDirectory),
            "STATIC_DIR": site.staticDirectory,
            "MAX_BODY": site.maxBody,
            "FASTCGI_READ_TIMEOUT": "\(readTimeout)s",
            // nginx needs a rate above 0 in the zone; a limit of 0 leaves the directive out.
            "DRAWING_RATE": "\(max(site.drawingRate, 1))",
            "DRAWING_REQUEST_LIMIT": site.drawingRate == 0 ? "" : "limit_req zone=drawing_requests burst=\(site.drawingRate * 2) nodelay;",
            "DRAWING_CONNECTION_LIMIT": site.drawingConnections == 0 ? "" : "limit_conn drawing_connections \(site.drawingConnections);",
            // In /api/jobs/, whose API_CONNECTIONS it would inherit: "no limit" is a limit on nothing.
            "EVENT_STREAM_LIMIT": site.eventStreams == 0 ? "limit_conn no_limit 1;" : "limit_conn event_streams \(site.eventStreams);",
            "API_CONNECTION_LIMIT": site.apiConnections == 0 ? "" : "limit_conn api_connections \(site.apiConnections);",
            // With DRAWING_AUTH, a line of /api/ws/ or /api/result/ would quote the request, and so
            // the session token in its query: a 502 while the app is down is written at error or
            // crit (its socket refused or not there yet). None is written but emergencies.
            "DRAWING_TOKEN_ERROR_LOG": configuration.drawingAuth ? "error_log \"\(site.runDirectory)/logs/error.log\" emerg;" : "",
        ]
    }

    /// Writes the configuration into `RUN_DIR/nginx/` and checks it with `nginx -t`.
    public func render() throws {
        let site = configuration.site
        let manager = FileManager.default
        for folder in ["\(prefix)/conf.d", "\(prefix)/snippets", "\(site.runDirectory)/logs", "\(site.runDirectory)/tmp"] {
            try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        if getuid() == 0, workers == nil {
            FileHandle.standardError.write(Data("warning: nginx's workers run as root: no www-data or nobody user, or a folder above RUN_DIR, OUTPUT_DIR or STATIC_DIR is closed to other users\n".utf8))
        }
        let values = values(nginxVersion: try Self.nginxVersion())
        for template in Self.templates {
            let source = "\(site.templateDirectory)/\(template)"
            guard var text = try? String(contentsOfFile: source, encoding: .utf8) else {
                throw RenderError(description: "cannot read the nginx template \(source) (NGINX_TEMPLATE_DIR)")
            }
            for (name, value) in values {
                text = text.replacingOccurrences(of: "@\(name)@", with: value)
            }
            try text.write(toFile: "\(prefix)/\(template)", atomically: true, encoding: .utf8)
        }
        let check = try Self.runNginx(["-t", "-q", "-e", errorLog, "-p", prefix, "-c", configPath])
        guard check.status == 0 else {
            throw RenderError(description: "nginx -t refused the rendered configuration: \(check.output)")
        }
    }

    /// `1.22.1` from `nginx -v`.
    static func nginxVersion() throws -> String {
        let output = try runNginx(["-v"]).output
        guard let range = output.range(of: "nginx/") else { return "0" }
        return String(output[range.upperBound...].prefix { $0.isNumber || $0 == "." })
    }

    static func runNginx(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: nginxPath)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        do {
            try process.run()
        } catch {
            throw RenderError(description: "cannot run \(nginxPath): \(error) (install nginx)")
        }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Debian's nginx, or the first one on `PATH`.
    public static var nginxPath: String {
        let candidates = ["/usr/sbin/nginx"] + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/nginx" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/sbin/nginx"
    }

    static let tls12Ciphers = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    /// `script-src` and `style-src` with the hashes of the page's own inline `<script>` and
    /// `<style>` (so nothing else runs), no plugins, no framing, forms and requests to this site.
    static func contentSecurityPolicy(page path: String) -> String {
        let html = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        func hashes(_ tag: String) -> String {
            var found: [String] = []
            var rest = html[...]
            while let open = rest.range(of: "<\(tag)>"), let close = rest.range(of: "</\(tag)>", range: open.upperBound..<rest.endIndex) {
                let body = Array(rest[open.upperBound..<close.lowerBound].utf8)
                found.append("'sha256-\(Data(Digest.sha256(body)).base64EncodedString())'")
                rest = rest[close.upperBound...]
            }
            return found.isEmpty ? "'none'" : found.joined(separator: " ")
        }
        return "default-src 'self'; script-src \(hashes("script")); style-src \(hashes("style")); img-src 'self' data: blob: https:; "
            + "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    }

    /// The unprivileged user nginx's workers run as when the gateway is started as root
    /// (Debian's `www-data`, else `nobody`); `nil` when not root (workers keep the user's id),
    /// or when that user could not reach the sockets, images or pages (a folder on the way
    /// closed to others, such as `/root`): then the workers stay root, and `render` says so.
    public var workers: (user: String, group: String, gid: gid_t)? {
        guard getuid() == 0 else { return nil }
        let reached = [configuration.socketPath, configuration.webSocketPath, configuration.outputDirectory + "/x", configuration.site.staticDirectory + "/x"]
        guard reached.allSatisfy({ Self.othersCanTraverse(to: SiteConfiguration.absolute($0)) }) else { return nil }
        for name in ["www-data", "nobody"] {
            guard let entry = getpwnam(name) else { continue }
            let gid = entry.pointee.pw_gid
            let group = getgrgid(gid).map { String(cString: $0.pointee.gr_name) } ?? "\(gid)"
            return (name, group, gid)
        }
        return nil
    }

    /// This process's user and group, as nginx's `user` directive names them.
    static var currentUser: String {
        let user = getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "\(getuid())"
        let group = getgrgid(getgid()).map { String(cString: $0.pointee.gr_name) } ?? "\(getgid())"
        return "\(user) \(group)"
    }

    /// Whether every folder above `path` lets other users through (`o+x`).
    static func othersCanTraverse(to path: String) -> Bool {
        var folder = (path as NSString).deletingLastPathComponent
        while !folder.isEmpty {
            var info = stat()
            if stat(folder, &info) == 0, info.st_mode & S_IXOTH == 0 { return false }
            if folder == "/" { break }
            folder = (folder as NSString).deletingLastPathComponent
        }
        return true
    }

    /// Lets nginx's workers, and no one else, connect to one of the app's sockets.
    public func grantSocket(_ path: String) {
        chmod(path, 0o660)
        if let gid = workers?.gid { chown(path, uid_t.max, gid) }
    }
}
