import Foundation
import NIOPosix
import Synchronization

/// Images as files under `OUTPUT_DIR`, which nginx serves at `/output_images/`.
///
/// Names are content hashes and writes are atomic (temporary file, then rename), so a reader
/// never sees a partial file and an existing image is never rewritten.
public struct LocalImageStore: ImageStore {
    public let directory: String
    /// `SERVER_BASE_URL` without trailing slash, or `""` for root-relative URLs.
    public let baseURL: String
    /// The URL path nginx serves the directory under.
    public let urlPath: String

    public init(directory: String, baseURL: String, urlPath: String = "/output_images") {
        self.directory = directory
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.urlPath = urlPath
    }

    public func store(_ bytes: [UInt8], mimeType: String) async throws -> StoredImage {
        // Hashing, write, rename and fsync block: they run on NIO's thread pool, not the cooperative one.
        let filename = try await NIOThreadPool.singleton.runIfActive { [self] in
            let filename = name(of: bytes, mimeType: mimeType)
            try write(bytes, to: filename)?.sync()
            return filename
        }
        return StoredImage(filename: filename, url: url(for: filename), mimeType: mimeType)
    }

    /// Writes the image under its final name and leaves its `fsync` to `makeDurable`: the job's
    /// record is written meanwhile. The file is whole once it has its name (written, then
    /// renamed), so a crash of the process never leaves a partial image.
    public func place(_ bytes: [UInt8], mimeType: String) async throws -> PlacedImage {
        let (filename, unsynced) = try await NIOThreadPool.singleton.runIfActive { [self] in
            let filename = name(of: bytes, mimeType: mimeType)
            return (filename, try write(bytes, to: filename))
        }
        let image = StoredImage(filename: filename, url: url(for: filename), mimeType: mimeType)
        guard let unsynced else { return PlacedImage(image: image, makeDurable: {}) }
        return PlacedImage(image: image, makeDurable: { try await NIOThreadPool.singleton.runIfActive { try unsynced.sync() } })
    }

    /// A stored image's bytes, `nil` when it is gone (retention) or the name is not one of ours.
    public func read(_ filename: String) async throws -> [UInt8]? {
        guard !filename.isEmpty, !filename.hasPrefix("."), !filename.contains("/") else { return nil }
        let path = path(for: filename)
        return try await NIOThreadPool.singleton.runIfActive {
            FileManager.default.contents(atPath: path).map { Array($0) }
        }
    }

    /// The public URL of a stored file.
    public func url(for filename: String) -> String {
        "\(baseURL)\(urlPath)/\(filename)"
    }

    /// The file's path on disk.
    public func path(for filename: String) -> String {
        "\(directory)/\(filename)"
    }

    private func name(of bytes: [UInt8], mimeType: String) -> String {
        Digest.hex(Digest.sha256(bytes)) + "." + fileExtension(forMimeType: mimeType)
    }

    /// Writes the file under a temporary name and renames it; returns it open for its `fsync`,
    /// or `nil` when an equal image is there already.
    func write(_ bytes: [UInt8], to filename: String) throws -> UnsyncedFile? {
        let target = path(for: filename)
        var existing = stat()
        if stat(target, &existing) == 0, existing.st_size == off_t(bytes.count) {
            // An equal image is already there: refresh its mtime, so retention counts from this use.
            _ = utimensat(AT_FDCWD, target, nil, 0)
            return nil
        }
        // Not there, or cut short (what a power cut before its fsync may leave): written anew.
        let temporary = "\(directory)/.tmp-\(UUID().uuidString)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StorageError(store: "local", message: "cannot create a file in the image folder: \(String(cString: strerror(errno)))") }
        let written = bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { return false }
                offset += written
            }
            return true
        }
        guard written, rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(temporary)
            throw StorageError(store: "local", message: "cannot write \(filename): \(reason)")
        }
        return UnsyncedFile(descriptor: fd, name: filename)
    }
}

/// A whole image file under its final name whose bytes may so far be in the page cache only.
final class UnsyncedFile: Sendable {
    private let descriptor: Mutex<Int32?>
    private let name: String

    init(descriptor: Int32, name: String) {
        self.descriptor = Mutex(descriptor)
        self.name = name
    }

    /// Forces the bytes to disk and closes the file (blocks; once).
    func sync() throws {
        guard let fd = descriptor.withLock({ $0.take() }) else { return }
        defer { close(fd) }
        guard fsync(fd) == 0 else {
            throw StorageError(store: "local", message: "cannot write \(name) to disk: \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        if let fd = descriptor.withLock({ $0.take() }) { close(fd) }
    }
}
