@testable import Comfy
import Foundation
import Testing

/// The part of sketch file names that sets one gateway's apart, kept across restarts.
struct SketchFilePrefixTests {
    @Test func theStoredPrefixIsTakenByOneProcessAtATimeAndAnotherMakesItsOwn() async throws {
        try await withTemporaryFolder("sketch-prefix") { path in
            // As a process before this one, on this host, left it.
            let host = SketchFilePrefix.hostName
            try Data("0123456789ab \(host)".utf8).write(to: URL(fileURLWithPath: "\(path)/sketch-files"))
            #expect(SketchFilePrefix.claim(in: path) == "0123456789ab", "a restart writes the names it wrote before")
            // The file is locked now, as by a second gateway on the same STATE_DIR.
            let other = SketchFilePrefix.claim(in: path)
            #expect(other != "0123456789ab" && other.count == 12)
            #expect(try String(contentsOfFile: "\(path)/sketch-files", encoding: .utf8) == "0123456789ab \(host)")
        }
        try await withTemporaryFolder("sketch-prefix-new") { path in
            let made = SketchFilePrefix.claim(in: path)
            let stored = try String(contentsOfFile: "\(path)/sketch-files", encoding: .utf8)
            #expect(stored == "\(made) \(SketchFilePrefix.hostName)", "made once, and kept")
        }
        try await withTemporaryFolder("sketch-prefix-copied") { path in
            // A STATE_DIR copied from another machine: that machine's gateway may still use it.
            try Data("0123456789ab another-host".utf8).write(to: URL(fileURLWithPath: "\(path)/sketch-files"))
            #expect(SketchFilePrefix.claim(in: path) != "0123456789ab")
        }
    }
}
