@testable import Comfy
import Foundation
import Testing

/// How input images are named: by owner and content, under a key only this gateway has.
struct InputImagesTests {
    func inputs(key: [UInt8]) -> InputImages {
        InputImages(
            directory: NSTemporaryDirectory(), http: CurlHTTPClient(threads: 1),
            limits: .init(maxBytes: 1 << 20, maxPixels: 1 << 20, fetchTimeout: .seconds(1), allowPrivate: false), folder: "gateway", namingKey: key
        )
    }

    @Test func oneImageFromTwoOwnersHasTwoNamesThatNeitherCanDeriveFromTheBytes() {
        let bytes = Array("the same image".utf8)
        let gateway = inputs(key: Array(repeating: 7, count: 32))
        let alice = gateway.name(of: bytes, owner: "key:alice")
        #expect(alice == gateway.name(of: bytes, owner: "key:alice"))
        #expect(alice != gateway.name(of: bytes, owner: "key:bob"))
        #expect(alice != Digest.hex(Digest.sha256(bytes)))
        // Another gateway (another key) names it otherwise: the name is not a function of public data.
        #expect(alice != inputs(key: Array(repeating: 8, count: 32)).name(of: bytes, owner: "key:alice"))
        #expect(gateway.storedName("gateway/\(alice).png") == "\(alice).png")
    }

    @Test func theNamingKeyIsMadeOncePrivateAndKept() throws {
        let path = NSTemporaryDirectory() + "input-names-\(UUID().uuidString.prefix(8)).key"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = try RandomSecret.loadOrCreate(at: path)
        #expect(first.count == 32)
        #expect(try RandomSecret.loadOrCreate(at: path) == first)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // A damaged key is refused, not silently replaced by a new one.
        try Data("short".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: RandomSecret.Failure.self) { try RandomSecret.loadOrCreate(at: path) }
        #expect(FileManager.default.contents(atPath: path) == Data("short".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter { $0.hasPrefix((path as NSString).lastPathComponent + ".") }.isEmpty, "no draft left")
    }
}
