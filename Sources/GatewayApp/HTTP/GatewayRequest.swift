import Comfy

/// An HTTP request as nginx hands it over FastCGI.
public struct GatewayRequest: Sendable {
    public var method: String
    /// The decoded path without query (`DOCUMENT_URI`).
    public var path: String
    public var query: String
    /// Header names lower-cased.
    public var headers: [String: String]
    public var body: [UInt8]
    /// The client's address as nginx saw it (`REMOTE_ADDR`): callers take turns by it.
    public var remoteAddress: String
    /// `http` or `https`, as the client reached nginx (`REQUEST_SCHEME`).
    public var scheme: String
    /// The `Host` header with its port, as the client sent it (`CLIENT_HOST`).
    public var host: String?
    /// Whether nginx found the client among `METRICS_ALLOW`'s addresses (`OPERATOR_CLIENT`, a
    /// parameter no request header can set): it may see the gateway's internals.
    public var isOperator: Bool
    /// The API key the router verified for a keyed route; `nil` when keys are off.
    public var apiKey: APIKey?

    public init(
        method: String, path: String, query: String = "", headers: [String: String] = [:], body: [UInt8] = [],
        remoteAddress: String = "", scheme: String = "http", host: String? = nil, isOperator: Bool = false
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.remoteAddress = remoteAddress
        self.scheme = scheme
        self.host = host
        self.isOperator = isOperator
    }

    /// A header by its lowercase name (as the FastCGI exchange stores them): asked several
    /// times per request, so no name is lowercased again here.
    public func header(_ name: String) -> String? { headers[name] }

    /// The first value of a query parameter, percent-decoded.
    func queryValue(_ name: String) -> String? { Self.value(of: name, inQuery: query) }

    static func value(of name: String, inQuery query: Substring) -> String? {
        for pair in query.split(separator: "&") where pair.hasPrefix("\(name)=") {
            return String(pair.dropFirst(name.count + 1)).removingPercentEncoding
        }
        return nil
    }

    static func value(of name: String, inQuery query: String) -> String? { value(of: name, inQuery: Substring(query)) }

    /// Every value of a query parameter, percent-decoded; `nil` for one whose escapes are broken.
    func queryValues(_ name: String) -> [String?] {
        query.split(separator: "&").filter { $0.hasPrefix("\(name)=") }.map { String($0.dropFirst(name.count + 1)).removingPercentEncoding }
    }

    /// Whose turn it is in the scheduler: the key for keyed work, else the client's address.
    var owner: String { apiKey.map { "key:\($0.name)" } ?? remoteAddress }
}
