import Foundation

/// Random keys from the system's generator (`getrandom`): API key secrets, and the keys the
/// gateway signs session tokens and names input images with.
public enum RandomSecret {
    /// Why a key file could not be made.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var description: String { "cannot write \(path)" }
    }

    public static func bytes(_ count: Int = 32) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// The 32-byte key in `path`, made (mode 0600) the first time, so it outlives restarts.
    public static func loadOrCreate(at path: String) throws(Failure) -> [UInt8] {
        if let existing = FileManager.default.contents(atPath: path), existing.count == 32 { return Array(existing) }
        let key = bytes(32)
        guard FileManager.default.createFile(atPath: path, contents: Data(key), attributes: [.posixPermissions: 0o600]) else { throw Failure(path: path) }
        return key
    }
}

extension Array where Element == UInt8 {
    /// base64url without padding (RFC 4648 §5): safe in URLs and tokens.
    public var base64URL: String {
        Data(self).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
