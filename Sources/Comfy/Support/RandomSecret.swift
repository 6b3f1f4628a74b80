import Foundation

/// Random keys from the system's generator (`getrandom`): API key secrets, and the keys the
/// gateway signs session tokens and names input images with.
public enum RandomSecret {
    /// Why a key file could not be read or made.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var problem = "cannot write it"
        public var description: String { "\(path): \(problem)" }
    }

    public static func bytes(_ count: Int = 32) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// The 32-byte key in `path`, made (mode 0600) the first time, so it outlives restarts. A
    /// file of another size is refused, not replaced: a new key would silently change what was
    /// signed or derived with the old one. Made beside it and linked into place, so of two
    /// processes starting together both use the one that landed first.
    public static func loadOrCreate(at path: String) throws(Failure) -> [UInt8] {
        if let existing = FileManager.default.contents(atPath: path) {
            guard existing.count == 32 else {
                throw Failure(path: path, problem: "holds \(existing.count) bytes, not a 32-byte key; restore it, or remove it to make a new key")
            }
            return Array(existing)
        }
        let key = bytes(32)
        let draft = "\(path).\(bytes(6).base64URL)"
        guard FileManager.default.createFile(atPath: draft, contents: Data(key), attributes: [.posixPermissions: 0o600]) else { throw Failure(path: path) }
        defer { unlink(draft) }
        if let handle = FileHandle(forWritingAtPath: draft) {
            try? handle.synchronize()
            try? handle.close()
        }
        guard link(draft, path) == 0 else {
            guard errno == EEXIST, let landed = FileManager.default.contents(atPath: path), landed.count == 32 else { throw Failure(path: path) }
            return Array(landed)
        }
        return key
    }
}

extension Array where Element == UInt8 {
    /// base64url without padding (RFC 4648 §5): safe in URLs and tokens.
    public var base64URL: String {
        Data(self).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
