import Comfy
import Foundation
@testable import GatewayApp
import Logging
import Testing

/// The cache of verified keys, over a real SQLite store.
struct APIKeyGateTests {
    @Test func aFloodOfUnknownSecretsDoesNotPushAValidKeyOutOfTheCache() async throws {
        let directory = NSTemporaryDirectory() + "key-gate-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try await SQLiteJobStore.open(path: "\(directory)/jobs.sqlite", logger: Logger(label: "test"))
        try await store.createKey(APIKey(name: "painter"), hash: APIKey.hash(of: "the-painters-secret"))
        // Entries live a minute here, so what the store says after the first read shows whether
        // the key was read again.
        let gate = APIKeyGate(store: store, mode: .auto, maxAge: .seconds(60))
        #expect(try await gate.authenticate(authorization: "Bearer the-painters-secret")?.name == "painter")
        #expect(try await store.revokeKey(named: "painter", at: Date()))
        for index in 0...APIKeyGate.maxUnknown {
            await #expect(throws: APIError.self) { try await gate.authenticate(authorization: "Bearer guess-\(index)") }
        }
        // Still the cached entry: the guesses cleared only their own. Cleared with them, the key
        // would have been read again and found revoked.
        #expect(try await gate.authenticate(authorization: "Bearer the-painters-secret")?.name == "painter")
        await store.close()
    }
}
