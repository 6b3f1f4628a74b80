import Comfy

/// An HTTP response to write back over FastCGI.
public struct GatewayResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A JSON body; API answers are never cached by intermediaries.
    static func json(_ value: JSONValue, status: Int = 200, headers: [(String, String)] = []) -> GatewayResponse {
        GatewayResponse(
            status: status,
            headers: [("Content-Type", "application/json"), ("Cache-Control", "no-store")] + headers,
            body: value.encoded()
        )
    }
}
