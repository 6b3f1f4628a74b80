/// An HTTP request for `CurlHTTPClient`.
public struct HTTPClientRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?
    /// The whole exchange, connect to last byte.
    public var timeout: Duration

    public init(method: String = "GET", url: String, headers: [(String, String)] = [], body: [UInt8]? = nil, timeout: Duration = .seconds(30)) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

/// A complete HTTP response read by `CurlHTTPClient`.
public struct HTTPClientResponse: Sendable {
    public var status: Int
    /// Header lines of the final response, names as sent.
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first header of that name, compared case-insensitively.
    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// Why an HTTP exchange did not produce a response.
public struct HTTPClientError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case connectionFailed, timedOut, cancelled, responseTooLarge, other }
    public var kind: Kind
    public var message: String

    public var description: String { message }
}
