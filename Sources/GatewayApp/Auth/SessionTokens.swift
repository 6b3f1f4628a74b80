import Comfy
import Foundation

/// Short-lived signed tokens that let a browser act for the drawing session it created
/// (`DRAWING_AUTH=true`): `/api/sketch` takes the API key and answers a token, which the page's
/// WebSocket and result fetches carry in their query, since browsers cannot set headers on a
/// WebSocket. A token is `<expiry unix seconds>.<base64url HMAC-SHA256(key, "session.expiry.name")>.<name>`,
/// `name` the API key it was given to: revoking the key ends its tokens too (the gate checks it).
/// The key lives in `STATE_DIR/drawing-token.key` (on a shared store, in the store), so tokens
/// outlive an app restart (and open the session on any instance).
struct SessionTokens: Sendable {
    private let key: [UInt8]
    let lifetime: Duration

    init(key: [UInt8], lifetime: Duration = .seconds(12 * 3600)) {
        self.key = key
        self.lifetime = lifetime
    }

    /// Signed with `STATE_DIR/drawing-token.key`, made the first time, or with the key every
    /// instance on a shared store signs with.
    static func load(stateDirectory: String, shared: (any SharedSecrets)? = nil, lifetime: Duration = .seconds(12 * 3600)) throws -> SessionTokens {
        SessionTokens(
            key: try StateSecret.load("drawing-token", stateDirectory: stateDirectory, shared: shared, neededBy: "DRAWING_AUTH"), lifetime: lifetime
        )
    }

    /// A token for the session, given to the API key named `keyName`.
    func token(for sessionID: String, keyName: String, now: Date = Date()) -> String {
        let expiry = Int(now.timeIntervalSince1970 + lifetime.seconds)
        return "\(expiry).\(signature(sessionID, expiry, keyName)).\(keyName)"
    }

    /// The name of the key `token` was given to, if it was made for this session and has not
    /// expired; else `nil`. A token naming no key (made before keys were needed) is worth nothing.
    func verify(_ token: String?, for sessionID: String, now: Date = Date()) -> String? {
        guard let token, token.utf8.count <= 200 else { return nil }
        // Key names may hold dots; base64url never does.
        let parts = token.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let expiry = Int(parts[0]), Double(expiry) > now.timeIntervalSince1970 else { return nil }
        let keyName = String(parts[2])
        guard !keyName.isEmpty else { return nil }
        let expected = Array(signature(sessionID, expiry, keyName).utf8)
        let given = Array(parts[1].utf8)
        // Constant time: a timing difference must not reveal how much of a forgery was right.
        guard given.count == expected.count, zip(given, expected).reduce(0, { $0 | ($1.0 ^ $1.1) }) == 0 else { return nil }
        return keyName
    }

    /// The `token` parameter of a request URI's query, if any.
    static func token(inURI uri: String) -> String? {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        return GatewayRequest.value(of: "token", inQuery: query)
    }

    private func signature(_ sessionID: String, _ expiry: Int, _ keyName: String) -> String {
        Digest.hmacSHA256(key: key, message: Array("\(sessionID).\(expiry).\(keyName)".utf8)).base64URL
    }
}
