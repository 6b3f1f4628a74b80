import Foundation

/// `JOB_STORE=postgres://user:password@host:port/database?sslmode=require`: where the shared
/// job store is. TLS follows libpq's `sslmode`: `disable` (the default) and `prefer` as libpq,
/// `require` encrypts without checking the certificate, `verify-full` checks it and the host.
public struct PostgresStoreURL: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, Equatable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var tls: TLSMode

    /// Parses the URL; `nil` with the reason when it is not one.
    public init(_ text: String) throws(PostgresStoreURLError) {
        guard let components = URLComponents(string: text), let scheme = components.scheme, ["postgres", "postgresql"].contains(scheme) else {
            throw PostgresStoreURLError("expected postgres://user:password@host:port/database")
        }
        guard let host = components.host, !host.isEmpty else { throw PostgresStoreURLError("the URL names no host") }
        guard let user = components.user, !user.isEmpty else { throw PostgresStoreURLError("the URL names no user") }
        self.host = host
        port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw PostgresStoreURLError("the port is out of range") }
        username = user.removingPercentEncoding ?? user
        password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? username : (path.removingPercentEncoding ?? path)
        tls = .disable
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                // libpq's verify-ca checks less than verify-full; here both check the host too.
                let value = item.value == "verify-ca" ? "verify-full" : item.value ?? ""
                guard let mode = TLSMode(rawValue: value) else {
                    throw PostgresStoreURLError("sslmode must be disable, prefer, require, verify-ca or verify-full")
                }
                tls = mode
            default:
                throw PostgresStoreURLError("unknown parameter \(item.name) (only sslmode is read)")
            }
        }
    }

    /// The URL without its password: what a log line may show.
    public var description: String { "postgres://\(username)@\(host):\(port)/\(database)?sslmode=\(tls.rawValue)" }
}

public struct PostgresStoreURLError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
