import Foundation
import NIOPosix

/// ComfyUI's input folder, when this machine shares it (`COMFYUI_INPUT_DIR`: the gateway beside
/// ComfyUI, or a volume both mount). An image a prompt loads (a sketch, a job's input) is then
/// written straight into it, in place of `POST /upload/image`.
///
/// That upload is most of a sketch's way to its prompt: ComfyUI parses the multipart body into a
/// temporary file before it writes the image (1.6 of 1.9 ms at p50 against the emulator, which
/// does as ComfyUI does). A backend uses the folder only once it has shown that it reads it
/// (`ComfyBackend.readsInputFolder`); one that does not gets its uploads over HTTP as before.
public struct ComfyInputFolder: Sendable, Equatable {
    public let path: String

    public init(path: String) {
        var path = path
        while path.count > 1, path.hasSuffix("/") { path.removeLast() }
        self.path = path
    }

    /// Writes the upload under its name. A file already there is rewritten in place, as
    /// `POST /upload/image` with `overwrite` does: a session's next prompt goes only after this
    /// write, and its last one has ended. Making a file would cost a new inode on the sketch's
    /// path, and on ext4 without a journal that scans every recently freed inode (about 1 ms
    /// after mass deletions, measured). A new name is made whole or not at all: a temporary
    /// file renamed under it, which also replaces a symbolic link rather than writing through
    /// it. No fsync: ComfyUI reads the file through the same page cache, and a sketch is worth
    /// nothing after a crash.
    func write(_ upload: PromptUpload) async throws {
        try await NIOThreadPool.singleton.runIfActive { try writeNow(upload) }
    }

    /// Removes a file written here (the probe), if it is there.
    func remove(_ upload: PromptUpload) async {
        _ = try? await NIOThreadPool.singleton.runIfActive { unlink(try target(of: upload)) }
    }

    /// The file's path; only plain names (no `..`, no hidden or absolute parts) come through,
    /// though the gateway makes every name itself.
    func target(of upload: PromptUpload) throws(ComfyInputFolderError) -> String {
        let parts = upload.subfolder.split(separator: "/", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        guard Self.isPlainName(upload.filename, hiddenAllowed: true), parts.allSatisfy({ Self.isPlainName($0, hiddenAllowed: false) }) else {
            throw ComfyInputFolderError(message: "\"\(upload.loadImageName.prefix(80))\" is not a plain file name")
        }
        return ([path] + parts.map(String.init) + [upload.filename]).joined(separator: "/")
    }

    private func writeNow(_ upload: PromptUpload) throws {
        let target = try target(of: upload)
        let folder = String(target[..<target.lastIndex(of: "/")!])
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw ComfyInputFolderError(message: "cannot make \(folder): \(error.localizedDescription)")
        }
        let existing = open(target, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC)
        if existing >= 0 {
            let written = writeAll(upload.bytes, to: existing)
            let reason = written ? nil : String(cString: strerror(errno))
            close(existing)
            guard written else { throw ComfyInputFolderError(message: "cannot write \(target): \(reason ?? "")") }
            return
        }
        let temporary = "\(folder)/.gateway-\(UUID().uuidString).part"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ComfyInputFolderError(message: "cannot write in \(folder): \(String(cString: strerror(errno)))") }
        let written = writeAll(upload.bytes, to: fd)
        let reason = written ? nil : String(cString: strerror(errno))
        close(fd)
        guard written, rename(temporary, target) == 0 else {
            let reason = reason ?? String(cString: strerror(errno))
            unlink(temporary)
            throw ComfyInputFolderError(message: "cannot write \(target): \(reason)")
        }
    }

    private static func isPlainName(_ name: some StringProtocol, hiddenAllowed: Bool) -> Bool {
        !name.isEmpty && name.utf8.count <= 255 && name != "." && name != ".." && (hiddenAllowed || !name.hasPrefix("."))
            && !name.contains("/") && !name.contains("\\") && !name.utf8.contains(0)
    }
}

/// Writing into ComfyUI's input folder failed.
struct ComfyInputFolderError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
