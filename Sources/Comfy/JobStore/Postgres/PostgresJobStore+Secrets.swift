import NIOCore
import PostgresNIO

/// The instances' common keys in `gateway_secrets`: the first instance to start makes each,
/// the others read it, all at open.
extension PostgresJobStore: SharedSecrets {
    /// What the store keeps: the drawing tokens' key, the input images' naming key and the
    /// root of API keys' webhook secrets.
    public static let secretNames = ["drawing-token", "input-names", "webhook-keys"]

    public func secret(named name: String) -> [UInt8]? {
        secrets.withLockedValue { $0[name] }
    }

    func loadSecrets() async throws {
        for name in Self.secretNames {
            try await execute(
                "INSERT INTO gateway_secrets (name, value) VALUES (\(name), \(ByteBuffer(bytes: RandomSecret.bytes(32)))) ON CONFLICT (name) DO NOTHING"
            )
        }
        var loaded: [String: [UInt8]] = [:]
        for row in try await rows("SELECT name, value FROM gateway_secrets") {
            if let name = row.text("name"), let value = try? row["value"].decode(ByteBuffer.self) { loaded[name] = Array(value.readableBytesView) }
        }
        secrets.withLockedValue { $0 = loaded }
    }
}
