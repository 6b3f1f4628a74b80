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

/// Input images' copies in a shared ComfyUI input folder go with the gateway's own.
struct InputImagesRetentionTests {
    @Test func copiesInASharedComfyInputFolderGoPastRetentionUnlessPlacedSinceAndNothingElseThere() async throws {
        try await withTemporaryFolder("input-retention") { path in
            let comfy = ComfyInputFolder(path: "\(path)/comfy/input")
            let inputs = InputImages(
                directory: "\(path)/state/inputs", http: CurlHTTPClient(threads: 1),
                limits: .init(maxBytes: 1 << 20, maxPixels: 1 << 20, fetchTimeout: .seconds(1), allowPrivate: false), folder: "gateway",
                namingKey: Array(repeating: 7, count: 32), comfyInputFolder: comfy
            )
            try FileManager.default.createDirectory(atPath: "\(path)/state/inputs", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: "\(path)/comfy/input", withIntermediateDirectories: true)
            let (old, reused, young) = (String(repeating: "a", count: 64) + ".png", String(repeating: "b", count: 64) + ".png", String(repeating: "c", count: 64) + ".webp")
            for name in [old, reused, young, "sketch-abc-0.png"] {
                try await comfy.write(PromptUpload(subfolder: "gateway", filename: name, bytes: Array("bytes of \(name)".utf8), mimeType: "image/png"))
            }
            let dayAgo = Date().addingTimeInterval(-86_400)
            for name in [old, reused, "sketch-abc-0.png"] {
                try FileManager.default.setAttributes([.modificationDate: dayAgo], ofItemAtPath: "\(path)/comfy/input/gateway/\(name)")
            }
            // Placed again for a job now: the same bytes stay, and their time is now.
            try await comfy.write(PromptUpload(subfolder: "gateway", filename: reused, bytes: Array("bytes of \(reused)".utf8), mimeType: "image/png"))

            _ = await inputs.removeUnused(before: Date().addingTimeInterval(-3600))
            let left = try FileManager.default.contentsOfDirectory(atPath: "\(path)/comfy/input/gateway").sorted()
            #expect(left == [reused, young, "sketch-abc-0.png"].sorted(), "\(left)")
        }
    }
}
