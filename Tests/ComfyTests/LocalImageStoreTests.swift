@testable import Comfy
import Foundation
import Testing

struct LocalImageStoreTests {
    @Test func storesUnderContentHashAtomicallyAndOnce() async throws {
        let directory = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalImageStore(directory: directory, baseURL: "https://cdn.example.com/")
        let bytes: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 1, 2, 3]
        let first = try await store.store(bytes, mimeType: "image/png")
        let second = try await store.store(bytes, mimeType: "image/png")
        #expect(first == second)
        #expect(first.filename == Digest.hex(Digest.sha256(bytes)) + ".png")
        #expect(first.url == "https://cdn.example.com/output_images/\(first.filename)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == [first.filename])
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(first.filename)"))) == bytes)
    }

    @Test func unwritableDirectoryFailsWithoutLeavingFiles() async throws {
        let store = LocalImageStore(directory: "/nonexistent-\(UUID().uuidString)", baseURL: "")
        await #expect(throws: StorageError.self) { try await store.store([1, 2, 3], mimeType: "image/png") }
    }

    @Test func sha256MatchesTheKnownVector() {
        #expect(Digest.hex(Digest.sha256(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // RFC 4231 test case 2.
        #expect(Digest.hex(Digest.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
            == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}
