import Foundation

/// Where one of the app's listeners is: a Unix socket path (the default, next to nginx), or
/// `host:port` for TCP when nginx runs on another machine (`FCGI_SOCKET=10.0.0.7:9000`).
///
/// FastCGI and the drawing listener trust what nginx sends (the client's address, the scheme):
/// on TCP, bind a private address that only the nginx hosts reach (`FCGI_WEB_SERVER_ADDRS`
/// makes libfcgi refuse any other peer).
public enum ListenAddress: Sendable, Equatable, CustomStringConvertible {
    case unix(String)
    case tcp(host: String, port: Int)

    /// `host:port` or `[v6]:port` with a numeric port is TCP; anything else is a path.
    public init(_ text: String) {
        if !text.contains("/"), let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) {
            var host = String(text[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            self = .tcp(host: host.isEmpty ? "0.0.0.0" : host, port: port)
        } else {
            self = .unix(text)
        }
    }

    public var isTCP: Bool { if case .tcp = self { true } else { false } }

    /// The `server` of an nginx upstream that reaches it.
    var nginxServer: String {
        switch self {
        case .unix(let path): "unix:\(SiteConfiguration.absolute(path))"
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }

    /// Whether something listens there: the socket file exists, or a TCP connection is taken.
    public var isListening: Bool {
        switch self {
        case .unix(let path):
            return FileManager.default.fileExists(atPath: path)
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var found: UnsafeMutablePointer<addrinfo>?
            let target = host == "0.0.0.0" ? "127.0.0.1" : host
            guard getaddrinfo(target, "\(port)", &hints, &found) == 0, let first = found else { return false }
            defer { freeaddrinfo(found) }
            let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0
        }
    }

    public var description: String {
        switch self {
        case .unix(let path): path
        case .tcp: nginxServer
        }
    }
}
