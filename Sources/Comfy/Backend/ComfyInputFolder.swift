import Foundation
import NIOPosix

/// ComfyUI's input folder, when this machine shares it (`COMFYUI_INPUT_DIR`: the gateway beside
/// ComfyUI, or a volume both mount). An image a prompt loads (a sketch, a job's input) is then
/// written straight into it, in place of `POST /upload/image`.
///
/// That upload is most of a sketch's way to its prompt: ComfyUI parses the multipart body into a
/// temporary file before it writes the image (1.6 of 1.9 ms at p50 against the emulator, which
/// does as ComfyUI does). A backend uses the folder only once it has shown that it reads it
/// (`ComfyBackend.inputFolderAccess(_:)`); one that does not gets its uploads over HTTP as before.
public struct ComfyInputFolder: Sendable, Equatable {
    public let path: String

    public init(path: String) {
        var path = path
        while path.count > 1, path.hasSuffix("/") { path.removeLast() }
        self.path = path
    }

    /// Writes the upload under its name.
    ///
    /// - The same bytes already there are left as they are, with their time refreshed: an input
    ///   image's name is its content's, ComfyUI may be reading it for another job, and the
    ///   retention sweep (`InputImages.removeUnused`) keeps what was placed since its cutoff.
    /// - Other bytes in a plain file (one link, no symbolic link) are written over in place, as
    ///   `POST /upload/image` with `overwrite` does: that is a session's sketch, whose next prompt
    ///   goes only after this write, its last one having ended. A new file would cost a new inode
    ///   on the sketch's path, and on ext4 without a journal that scans every recently freed
    ///   inode (about 1 ms after mass deletions, measured).
    /// - Anything else (a new name, a link, a pipe) gets a temporary file renamed under the name,
    ///   whole or not at all, which replaces the link rather than writing through it.
    ///
    /// No fsync: ComfyUI reads the file through the same page cache, and a sketch is worth
    /// nothing after a crash.
    ///
    /// - Parameter expected: the folder a backend was seen to read. If the path leads elsewhere
    ///   now (a volume unmounted or mounted, a link moved), nothing is written and
    ///   `ComfyInputFolderError.moved` is thrown: a file written there would not be seen, and
    ///   ComfyUI could take a sketch left from before for the new one.
    /// - Returns: the folder the path led to, for the next write to expect.
    @discardableResult
    func write(_ upload: PromptUpload, expecting expected: Identity? = nil) async throws -> Identity {
        try await NIOThreadPool.singleton.runIfActive { try writeNow(upload, expecting: expected) }
    }

    /// Which folder the path leads to (device and inode, links followed).
    struct Identity: Equatable, Sendable {
        var device: UInt64
        var inode: UInt64
    }

    /// Removes a file written here (the probe), if it is there.
    func remove(_ upload: PromptUpload) async {
        _ = try? await NIOThreadPool.singleton.runIfActive {
            let (folder, _) = try openFolder(of: upload, making: false)
            defer { close(folder) }
            unlinkat(folder, upload.filename, 0)
        }
    }

    /// The upload's subfolder, opened (and made if `making` and missing) one plain name at a time
    /// from `path`, following no link on the way: a link planted inside ComfyUI's input folder
    /// cannot lead the gateway's writes elsewhere. Only plain names come through (no `..`, no
    /// hidden or absolute parts), though the gateway makes every name itself. Returns it with the
    /// identity of the folder `path` led to.
    private func openFolder(
        of upload: PromptUpload, making: Bool, expecting expected: Identity? = nil
    ) throws(ComfyInputFolderError) -> (Int32, Identity) {
        let parts = upload.subfolder.split(separator: "/", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        guard Self.isPlainName(upload.filename, hiddenAllowed: true), parts.allSatisfy({ Self.isPlainName($0, hiddenAllowed: false) }) else {
            throw ComfyInputFolderError(message: "\"\(upload.loadImageName.prefix(80))\" is not a plain file name")
        }
        var folder = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard folder >= 0 else { throw ComfyInputFolderError(message: "cannot open \(path): \(String(cString: strerror(errno)))") }
        var status = stat()
        _ = fstat(folder, &status)
        let identity = Identity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
        guard expected == nil || expected == identity else {
            close(folder)
            throw .moved
        }
        for part in parts {
            var next = openat(folder, String(part), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0, errno == ENOENT, making, mkdirat(folder, String(part), 0o755) == 0 || errno == EEXIST {
                next = openat(folder, String(part), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            let reason = String(cString: strerror(errno))
            close(folder)
            guard next >= 0 else { throw ComfyInputFolderError(message: "cannot open \(path)/\(upload.subfolder) (a link or not a folder?): \(reason)") }
            folder = next
        }
        return (folder, identity)
    }

    private func writeNow(_ upload: PromptUpload, expecting expected: Identity?) throws -> Identity {
        let (folder, identity) = try openFolder(of: upload, making: true, expecting: expected)
        defer { close(folder) }
        let target = "\(path)/\(upload.loadImageName)"
        // Non-blocking: a pipe under the name must not hold the thread; it is replaced below.
        let existing = openat(folder, upload.filename, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        if existing >= 0 {
            defer { close(existing) }
            var status = stat()
            if fstat(existing, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_nlink == 1 {
                // Where the time cannot be set, the write below sets it.
                if status.st_size == off_t(upload.bytes.count), Self.holds(upload.bytes, existing), futimens(existing, nil) == 0 { return identity }
                // Just opened, and only read with pread: the offset is still 0.
                guard ftruncate(existing, 0) == 0, writeAll(upload.bytes, to: existing) else {
                    throw ComfyInputFolderError(message: "cannot write \(target): \(String(cString: strerror(errno)))")
                }
                return identity
            }
        }
        // `.tmp-`: the retention sweep removes one a crash left, after an hour.
        let temporary = ".tmp-gateway-\(UUID().uuidString).part"
        let fd = openat(folder, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ComfyInputFolderError(message: "cannot write next to \(target): \(String(cString: strerror(errno)))") }
        let written = writeAll(upload.bytes, to: fd)
        let reason = written ? nil : String(cString: strerror(errno))
        close(fd)
        guard written, renameat(folder, temporary, folder, upload.filename) == 0 else {
            let reason = reason ?? String(cString: strerror(errno))
            unlinkat(folder, temporary, 0)
            throw ComfyInputFolderError(message: "cannot write \(target): \(reason)")
        }
        return identity
    }

    /// Whether the open file's bytes are `bytes` (its size is theirs).
    private static func holds(_ bytes: [UInt8], _ fd: Int32) -> Bool {
        var read = [UInt8](repeating: 0, count: bytes.count)
        let count = read.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        return count == bytes.count && read == bytes
    }

    private static func isPlainName(_ name: some StringProtocol, hiddenAllowed: Bool) -> Bool {
        !name.isEmpty && name.utf8.count <= 255 && name != "." && name != ".." && (hiddenAllowed || !name.hasPrefix("."))
            && !name.contains("/") && !name.contains("\\") && !name.utf8.contains(0)
    }
}

/// Writing into ComfyUI's input folder failed.
struct ComfyInputFolderError: Error, CustomStringConvertible, Equatable {
    var message: String
    var description: String { message }

    static let moved = ComfyInputFolderError(message: "COMFYUI_INPUT_DIR leads to another folder than the one ComfyUI was seen to read")
}
