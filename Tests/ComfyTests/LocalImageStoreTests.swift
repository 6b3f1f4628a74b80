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
        #expect(try Self.files(in: directory) == [first.filename])
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(first.filename)"))) == bytes)
    }

    @Test func unwritableDirectoryFailsWithoutLeavingFiles() async throws {
        let store = LocalImageStore(directory: "/nonexistent-\(UUID().uuidString)", baseURL: "")
        await #expect(throws: StorageError.self) { try await store.store([1, 2, 3], mimeType: "image/png") }
    }

    @Test func concurrentReadersNeverSeeAPartialImage() async throws {
        let directory = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalImageStore(directory: directory, baseURL: "")
        let images = (0..<24).map { index in [UInt8](repeating: UInt8(index), count: 1 << 20) + [UInt8(index)] }
        let partial = try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                for image in images { _ = try await store.store(image, mimeType: "image/png") }
                return 0
            }
            group.addTask {
                // Every file under a final name must already hold exactly the bytes it is named after.
                var partial = 0
                for _ in 0..<400 {
                    for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where !name.hasPrefix(".tmp-") {
                        guard let data = FileManager.default.contents(atPath: "\(directory)/\(name)") else { continue }
                        if Digest.hex(Digest.sha256(Array(data))) + ".png" != name { partial += 1 }
                    }
                    await Task.yield()
                }
                return partial
            }
            return try await group.reduce(0, +)
        }
        #expect(partial == 0)
        #expect(try Self.files(in: directory).count == images.count)
    }

    @Test func leftoverOfACrashedWriteNeitherShowsNorBlocksTheImage() async throws {
        let directory = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = [UInt8](repeating: 7, count: 4096)
        // What a process killed mid-write leaves: half the bytes under a temporary name, nothing under the final one.
        try Data(bytes.prefix(2048)).write(to: URL(fileURLWithPath: "\(directory)/.tmp-CRASHED"))
        let store = LocalImageStore(directory: directory, baseURL: "")
        let stored = try await store.store(bytes, mimeType: "image/png")
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: store.path(for: stored.filename)))) == bytes)
        #expect(Set(try Self.files(in: directory)) == [".tmp-CRASHED", stored.filename])
        #expect(!RetentionSweeper.isImageFileName(".tmp-CRASHED"))
    }

    @Test func aFileCutShortUnderAnImagesNameIsWrittenAgainByTheNextEqualImage() async throws {
        let directory = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalImageStore(directory: directory, baseURL: "")
        let bytes = [UInt8](repeating: 5, count: 8192)
        let name = Digest.hex(Digest.sha256(bytes)) + ".png"
        // A file under the image's name without its bytes (cut short, damaged): not taken for the image.
        #expect(FileManager.default.createFile(atPath: store.path(for: name), contents: Data(bytes.prefix(100))))
        let stored = try await store.store(bytes, mimeType: "image/png")
        #expect(stored.filename == name)
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: store.path(for: name)))) == bytes)
        #expect(try Self.files(in: directory) == [name])
    }

    @Test func aWriteFillsTheFileMadeAheadAfterTheLastOneAndNoneOutlivesTheStore() async throws {
        let directory = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var names: [String] = []
        do {
            let store = LocalImageStore(directory: directory, baseURL: "")
            names.append(try await store.store([1, 2, 3], mimeType: "image/png").filename)
            // Made once the write has answered, on the thread that wrote.
            let spare = try await Self.oneSpare(in: directory)
            let second = try await store.store([4, 5, 6], mimeType: "image/png")
            names.append(second.filename)
            #expect(!FileManager.default.fileExists(atPath: "\(directory)/\(spare)"), "the next write took it")
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: store.path(for: second.filename)))) == [4, 5, 6])
            #expect(try await Self.oneSpare(in: directory) != spare)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == names.sorted())
    }

    @Test func sparesAreEmptyFewAndGoneForGoodOnceDiscarded() throws {
        let directory = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spares = SpareFiles(directory: directory)
        for _ in 0..<5 { spares.refill() }
        let made = try Self.spares(in: directory)
        #expect(made.count == SpareFiles.maxKept)
        let file = try spares.take()
        #expect(made.contains { file.path.hasSuffix("/\($0)") }, "a write takes a spare when one is ready")
        close(file.fd)
        unlink(file.path)
        spares.discard()
        spares.refill()
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "none is made once the store is done with")
    }

    @Test func aFileMadeAheadLongAgoIsRemovedNotFilled() throws {
        let directory = NSTemporaryDirectory() + "store-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Past its age the retention sweep may take a temporary file: a spare that old is not written into.
        let spares = SpareFiles(directory: directory, maxAge: .zero)
        spares.refill()
        let made = try Self.spares(in: directory)
        #expect(made.count == 1)
        let file = try spares.take()
        defer { close(file.fd); unlink(file.path) }
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/\(made[0])"))
        #expect(!file.path.hasSuffix(made[0]))
    }

    /// The name of the one spare in the folder, once there is one (it is made after an answer).
    static func oneSpare(in directory: String) async throws -> String {
        for _ in 0..<500 {
            let names = try spares(in: directory)
            if names.count == 1 { return names[0] }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw CancellationError()
    }

    /// The folder's files but for the empty ones made ahead for the next writes (checked empty).
    static func files(in directory: String) throws -> [String] {
        let spares = try Self.spares(in: directory)
        return try FileManager.default.contentsOfDirectory(atPath: directory).filter { !spares.contains($0) }.sorted()
    }

    /// The files made ahead for the next writes; each must be empty.
    static func spares(in directory: String) throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(SpareFiles.prefix) }
        for name in names {
            #expect(FileManager.default.contents(atPath: "\(directory)/\(name)")?.isEmpty == true, "a spare holds no byte")
        }
        return names
    }

    @Test func sha256MatchesTheKnownVector() {
        #expect(Digest.hex(Digest.sha256(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // RFC 4231 test case 2.
        #expect(Digest.hex(Digest.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
            == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // RFC 2202 test case 2.
        #expect(Digest.hex(Digest.hmacSHA1(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
            == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    }
}
