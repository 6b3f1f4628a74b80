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
    static let templates = ["nginx.conf", "conf.d/gateway.conf", "snippets/fastcgi-gateway.conf", "snippets/websocket-proxy.conf"]

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
            tls = "ssl_certificate \(certificate); ssl_certificate_key \(key); ssl_protocols TLSv1.2 TLSv1.3;" + (old ? "" : " http2 on;")
        }
        // A generate call waits up to GENERATE_TIMEOUT; nginx must wait a little longer than the app.
        let readTimeout = configuration.generateTimeout.components.seconds + 30
        return [
            "RUN_DIR": site.runDirectory,
            "USER_DIRECTIVE": getuid() == 0 ? "user \(Self.userName()) \(Self.groupName());" : "",
            "LISTEN": listen,
            "TLS": tls,
            "METRICS_ALLOW": site.metricsAllow.map { "allow \($0);" }.joined(separator: " "),
            "FCGI_SOCKET": SiteConfiguration.absolute(configuration.socketPath),
            "WS_SOCKET": SiteConfiguration.absolute(configuration.webSocketPath),
            "OUTPUT_DIR": SiteConfiguration.absolute(configuration.outputDirectory),
            "STATIC_DIR": site.staticDirectory,
            "MAX_BODY": site.maxBody,
            "FASTCGI_READ_TIMEOUT": "\(readTimeout)s",
        ]
    }

    /// Writes the configuration into `RUN_DIR/nginx/` and checks it with `nginx -t`.
    public func render() throws {
        let site = configuration.site
        let manager = FileManager.default
        for folder in ["\(prefix)/conf.d", "\(prefix)/snippets", "\(site.runDirectory)/logs", "\(site.runDirectory)/tmp"] {
            try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
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

    static func userName() -> String {
        getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "\(getuid())"
    }

    static func groupName() -> String {
        getgrgid(getgid()).map { String(cString: $0.pointee.gr_name) } ?? "\(getgid())"
    }
}
