@testable import Comfy
import Foundation
import Testing

/// Writing the images prompts load into a shared ComfyUI input folder.
struct ComfyInputFolderTests {
    func upload(_ subfolder: String, _ filename: String, _ text: String = "image") -> PromptUpload {
        PromptUpload(subfolder: subfolder, filename: filename, bytes: Array(text.utf8), mimeType: "image/png")
    }

    @Test func anUploadLandsUnderItsNameAndANewOneReplacesItWhole() async throws {
        try await withTemporaryFolder("input") { path in
            let folder = ComfyInputFolder(path: path + "/")
            try await folder.write(upload("gateway/deeper", "session-a.png", "first"))
            try await folder.write(upload("gateway/deeper", "session-a.png", "second, longer"))
            #expect(FileManager.default.contents(atPath: "\(path)/gateway/deeper/session-a.png") == Data("second, longer".utf8))
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(path)/gateway/deeper") == ["session-a.png"])
            await folder.remove(upload("gateway/deeper", "session-a.png"))
            #expect(!FileManager.default.fileExists(atPath: "\(path)/gateway/deeper/session-a.png"))
        }
    }

    @Test func aFileAlreadyThereIsRewrittenInPlaceWithoutANewInode() async throws {
        try await withTemporaryFolder("input") { path in
            let folder = ComfyInputFolder(path: path)
            try await folder.write(upload("gateway", "session-b.png", "a long first sketch"))
            var first = stat()
            #expect(stat("\(path)/gateway/session-b.png", &first) == 0)
            try await folder.write(upload("gateway", "session-b.png", "short"))
            var second = stat()
            #expect(stat("\(path)/gateway/session-b.png", &second) == 0)
            #expect(second.st_ino == first.st_ino)
            #expect(FileManager.default.contents(atPath: "\(path)/gateway/session-b.png") == Data("short".utf8))
        }
    }

    @Test func aSymbolicLinkUnderTheNameIsReplacedNotWrittenThrough() async throws {
        try await withTemporaryFolder("input") { path in
            try FileManager.default.createDirectory(atPath: "\(path)/gateway", withIntermediateDirectories: true)
            try Data("precious".utf8).write(to: URL(fileURLWithPath: "\(path)/precious.txt"))
            #expect(symlink("\(path)/precious.txt", "\(path)/gateway/session-c.png") == 0)
            try await ComfyInputFolder(path: path).write(upload("gateway", "session-c.png", "sketch"))
            #expect(FileManager.default.contents(atPath: "\(path)/precious.txt") == Data("precious".utf8))
            #expect(FileManager.default.contents(atPath: "\(path)/gateway/session-c.png") == Data("sketch".utf8))
            #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(path)/gateway/session-c.png")) == nil)
        }
    }

    @Test func theSameBytesAlreadyThereAreNotWrittenAgainButTheirTimeIsRefreshed() async throws {
        try await withTemporaryFolder("input") { path in
            let folder = ComfyInputFolder(path: path)
            try await folder.write(upload("inputs", "abc.png", "content-named image"))
            let file = "\(path)/inputs/abc.png"
            var past = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000_000, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, file, &past, 0) == 0)
            var before = stat()
            #expect(stat(file, &before) == 0)
            try await folder.write(upload("inputs", "abc.png", "content-named image"))
            var status = stat()
            #expect(stat(file, &status) == 0)
            // ComfyUI may be reading it for another job: the same file, and placed now for the
            // retention sweep (`InputImages.removeUnused`).
            #expect(status.st_ino == before.st_ino && status.st_size == before.st_size)
            #expect(status.st_mtim.tv_sec > Int(Date().timeIntervalSince1970) - 60)
            // Other bytes of the same size are written.
            try await folder.write(upload("inputs", "abc.png", "content-named IMAGE"))
            #expect(FileManager.default.contents(atPath: file) == Data("content-named IMAGE".utf8))
        }
    }

    @Test func aHardLinkOrAPipeUnderTheNameIsReplacedNotWrittenThrough() async throws {
        try await withTemporaryFolder("input") { path in
            try FileManager.default.createDirectory(atPath: "\(path)/gateway", withIntermediateDirectories: true)
            try Data("precious".utf8).write(to: URL(fileURLWithPath: "\(path)/precious.txt"))
            #expect(link("\(path)/precious.txt", "\(path)/gateway/linked.png") == 0)
            #expect(mkfifo("\(path)/gateway/pipe.png", 0o644) == 0)
            let folder = ComfyInputFolder(path: path)
            try await folder.write(upload("gateway", "linked.png", "sketch"))
            try await folder.write(upload("gateway", "pipe.png", "sketch"))
            #expect(FileManager.default.contents(atPath: "\(path)/precious.txt") == Data("precious".utf8))
            #expect(FileManager.default.contents(atPath: "\(path)/gateway/linked.png") == Data("sketch".utf8))
            #expect(FileManager.default.contents(atPath: "\(path)/gateway/pipe.png") == Data("sketch".utf8))
        }
    }

    @Test func aSubfolderThatIsASymbolicLinkIsRefusedAndNothingIsWrittenThroughIt() async throws {
        try await withTemporaryFolder("input") { path in
            try FileManager.default.createDirectory(atPath: "\(path)/input", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: "\(path)/elsewhere", withIntermediateDirectories: true)
            #expect(symlink("\(path)/elsewhere", "\(path)/input/gateway") == 0)
            let folder = ComfyInputFolder(path: "\(path)/input")
            await #expect(throws: ComfyInputFolderError.self) { try await folder.write(upload("gateway", "session-d.png", "sketch")) }
            await #expect(throws: ComfyInputFolderError.self) { try await folder.write(upload("gateway/deeper", "session-d.png", "sketch")) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(path)/elsewhere").isEmpty)
        }
    }

    @Test(arguments: [
        ("gateway", "../escape.png"), ("gateway", "a/b.png"), ("gateway", ".."), ("gateway", ""), ("../up", "x.png"),
        ("gateway/../..", "x.png"), (".hidden", "x.png"), ("gateway", "nul\u{0}.png"), ("gateway", "back\\slash.png"),
    ])
    func namesThatAreNotPlainAreRefusedAndNothingIsWritten(subfolder: String, filename: String) async throws {
        try await withTemporaryFolder("input") { path in
            await #expect(throws: ComfyInputFolderError.self) { try await ComfyInputFolder(path: path).write(upload(subfolder, filename)) }
            let written = try FileManager.default.subpathsOfDirectory(atPath: path)
            #expect(written.isEmpty)
        }
    }
}
