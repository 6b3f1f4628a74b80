import Comfy
import Foundation

/// Short-lived signed tokens that let a browser act for the drawing session it created
/// (`DRAWING_AUTH=true`): `/api/sketch` takes the API key and answers a token, which the page's
/// WebSocket and result fetches carry in their query, since browsers cannot set headers on a
/// WebSocket. A token is `<expiry unix seconds>.<base64url HMAC-SHA256(key, "session.expiry")>`;
/// the key lives in `STATE_DIR/drawing-token.key`, so tokens outlive an app restart.
struct SessionTokens: Sendable {
    private let key: [UInt8]
    let lifetime: Duration

    init(key: [UInt8], lifetime: Duration = .seconds(12 * 3600)) {
        self.key = key
        self.lifetime = lifetime
    }

    /// The key file's 32 random bytes, made (mode 0600) the first time.
    static func load(stateDirectory: String, lifetime: Duration = .seconds(12 * 3600)) throws -> SessionTokens {
        let path = "\(stateDirectory)/drawing-token.key"
        if let existing = FileManager.default.contents(atPath: path), existing.count == 32 {
            return SessionTokens(key: Array(existing), lifetime: lifetime)
        }
        var generator = SystemRandomNumberGenerator()
        let key = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        guard FileManager.default.createFile(atPath: path, contents: Data(key), attributes: [.posixPermissions: 0o600]) else {
            throw ConfigurationError(variable: "STATE_DIR", problem: "cannot write \(path) (DRAWING_AUTH needs it)")
        }
        return SessionTokens(key: key, lifetime: lifetime)
    }

    func token(for sessionID: String, now: Date = Date()) -> String {
        let expiry = Int(now.timeIntervalSince1970 + lifetime.seconds)
        return "\(expiry).\(signature(sessionID, expiry))"
    }

    /// Whether `token` was made for this session and has not expired.
    func verify(_ token: String?, for sessionID: String, now: Date = Date()) -> Bool {
        guard let token, token.utf8.count <= 128 else { return false }
        let parts = token.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let expiry = Int(parts[0]), Double(expiry) > now.timeIntervalSince1970 else { return false }
        let expected = Array(signature(sessionID, expiry).utf8)
        let given = Array(parts[1].utf8)
        // Constant time: a timing difference must not reveal how much of a forgery was right.
        guard given.count == expected.count else { return false }
        return zip(given, expected).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// The `token` parameter of a request URI's query, if any.
    static func token(inURI uri: String) -> String? {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        return token(inQuery: String(query))
    }

    static func token(inQuery query: String) -> String? {
        for pair in query.split(separator: "&") where pair.hasPrefix("token=") {
            return String(pair.dropFirst("token=".count)).removingPercentEncoding
        }
        return nil
    }

    private func signature(_ sessionID: String, _ expiry: Int) -> String {
        Data(Digest.hmacSHA256(key: key, message: Array("\(sessionID).\(expiry)".utf8))).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
