@testable import Comfy
import Foundation
import Testing

/// `OUTPUT_RETENTION`: what a sweep removes at a given "now", and what it never touches.
struct RetentionSweeperTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let day: TimeInterval = 86_400

    /// A fresh directory; `files` maps names to their age in seconds at `now`.
    func makeDirectory(_ files: [String: TimeInterval]) throws -> String {
        let directory = NSTemporaryDirectory() + "retention-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, age) in files {
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(directory)/\(name)"))
            try setAge(age, of: "\(directory)/\(name)")
        }
        return directory
    }

    func setAge(_ age: TimeInterval, of path: String) throws {
        let seconds = Self.now.timeIntervalSince1970 - age
        var times = [timespec(tv_sec: Int(seconds), tv_nsec: 0), timespec(tv_sec: Int(seconds), tv_nsec: 0)]
        guard utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW) == 0 else { throw SetupError("utimensat \(path)") }
    }

    static func image(_ seed: Character, _ ext: String = "png") -> String {
        String(repeating: seed, count: 64) + "." + ext
    }

    @Test func removesOnlyOldFinishedImagesAndStaleTemporaryFiles() throws {
        let directory = try makeDirectory([
            Self.image("a"): 8 * Self.day,                 // old image: removed
            Self.image("b", "jpg"): 7 * Self.day + 1,      // just past seven days: removed
            Self.image("c", "webp"): 7 * Self.day,         // exactly seven days: kept
            Self.image("d", "gif"): 60,                    // young: kept
            Self.image("e"): 30 * Self.day,                // old but still referenced: kept
            String(repeating: "A", count: 64) + ".png": 30 * Self.day,  // not a name the stores write
            Self.image("f", "txt"): 30 * Self.day,
            "notes.txt": 30 * Self.day,
            ".tmp-OLD": 2 * 3600,                          // crashed write: removed
            ".tmp-RECENT": 1800,                           // maybe still being written: kept
        ])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Neither directories nor symlinks are removed, whatever their names.
        try FileManager.default.createDirectory(atPath: "\(directory)/\(Self.image("1"))", withIntermediateDirectories: false)
        try setAge(30 * Self.day, of: "\(directory)/\(Self.image("1"))")
        try FileManager.default.createSymbolicLink(atPath: "\(directory)/\(Self.image("2"))", withDestinationPath: "/etc/hostname")
        try setAge(30 * Self.day, of: "\(directory)/\(Self.image("2"))")

        let sweeper = RetentionSweeper(directory: directory, retention: .seconds(7 * 86_400))
        let report = sweeper.sweep(now: Self.now, keep: [Self.image("e")])
        #expect(report.removed == [".tmp-OLD", Self.image("a"), Self.image("b", "jpg")])
        #expect(report.failed.isEmpty)
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: directory))
        #expect(left == [
            Self.image("c", "webp"), Self.image("d", "gif"), Self.image("e"), String(repeating: "A", count: 64) + ".png",
            Self.image("f", "txt"), "notes.txt", ".tmp-RECENT", Self.image("1"), Self.image("2"),
        ])
        // A second sweep at the same moment has nothing left to do.
        #expect(sweeper.sweep(now: Self.now, keep: [Self.image("e")]).removed.isEmpty)
    }

    @Test func nothingIsRemovedBeforeItsTime() throws {
        let directory = try makeDirectory([Self.image("a"): 3600, ".tmp-x": 3600 - 1])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sweeper = RetentionSweeper(directory: directory, retention: .seconds(3600))
        #expect(sweeper.sweep(now: Self.now).removed.isEmpty)
        #expect(sweeper.sweep(now: Self.now.addingTimeInterval(1)).removed == [Self.image("a")])
        #expect(sweeper.sweep(now: Self.now.addingTimeInterval(2)).removed == [".tmp-x"])
    }

    @Test func storingAnEqualImageAgainRestartsItsRetention() async throws {
        let directory = try makeDirectory([:])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalImageStore(directory: directory, baseURL: "")
        let stored = try await store.store([1, 2, 3], mimeType: "image/png")
        try setAge(30 * Self.day, of: store.path(for: stored.filename))
        _ = try await store.store([1, 2, 3], mimeType: "image/png")
        let sweeper = RetentionSweeper(directory: directory, retention: .seconds(86_400))
        #expect(sweeper.sweep(now: Date()).removed.isEmpty)
        #expect(FileManager.default.fileExists(atPath: store.path(for: stored.filename)))
    }

    @Test func anImageStoredAgainBetweenTheSweepsLookAndItsRemovalIsKept() async throws {
        let directory = try makeDirectory([:])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = LocalImageStore(directory: directory, baseURL: "")
        let stored = try await store.store([4, 5, 6], mimeType: "image/png")
        let path = store.path(for: stored.filename)
        try setAge(30 * Self.day, of: path)
        let sweeper = RetentionSweeper(directory: directory, retention: .seconds(86_400))
        // The sweep has seen the image as due; the same image is stored again at that moment.
        let report = sweeper.sweep(now: Self.now, keep: []) { name in
            guard name == stored.filename else { return }
            #expect(throws: Never.self) { try store.write([4, 5, 6], to: stored.filename) }
        }
        #expect(!report.removed.contains(stored.filename))
        #expect(FileManager.default.contents(atPath: path) == Data([4, 5, 6]), "the caller's URL still serves its image")
        // Nothing was left aside, and an image not stored again goes at the next sweep.
        try setAge(30 * Self.day, of: path)
        #expect(sweeper.sweep(now: Self.now).removed == [stored.filename])
        let left = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(left.filter { $0.hasPrefix(".tmp-sweep-") || RetentionSweeper.isImageFileName($0) }.isEmpty, "\(left)")
    }

    @Test func imageNamesAreExactlyWhatTheStoresWrite() {
        #expect(RetentionSweeper.isImageFileName(Digest.hex(Digest.sha256([1])) + ".png"))
        #expect(RetentionSweeper.isImageFileName(Self.image("0", "webp")))
        #expect(!RetentionSweeper.isImageFileName(Self.image("0", "bin")))
        #expect(!RetentionSweeper.isImageFileName(Self.image("g")))
        #expect(!RetentionSweeper.isImageFileName(String(repeating: "a", count: 63) + ".png"))
        #expect(!RetentionSweeper.isImageFileName(".tmp-" + Self.image("a")))
    }
}

/// A test precondition that could not be set up.
private struct SetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
