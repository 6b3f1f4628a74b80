import Foundation
import NIOPosix

/// Images as files under `OUTPUT_DIR`, which nginx serves at `/output_images/`.
///
/// Names are content hashes and writes are atomic (temporary file, then rename), so a reader
/// never sees a partial file and an existing whole image is never rewritten.
public struct LocalImageStore: ImageStore {
    public let directory: String
    /// `SERVER_BASE_URL` without trailing slash, or `""` for root-relative URLs.
    public let baseURL: String
    /// The URL path nginx serves the directory under.
    public let urlPath: String
    /// Files made ahead for the next writes, refilled after `store` answers; removed when the
    /// last copy of this store goes (the gateway stops).
    private let spares: SpareFiles

    public init(directory: String, baseURL: String, urlPath: String = "/output_images") {
        self.directory = directory
        spares = SpareFiles(directory: directory)
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.urlPath = urlPath
    }

    public func store(_ bytes: [UInt8], mimeType: String) async throws -> StoredImage {
        // Hashing, write, fsync and rename block: they run on NIO's thread pool, not the cooperative one.
        let filename: String = try await withCheckedThrowingContinuation { continuation in
            NIOThreadPool.singleton.submit { [self] state in
                guard case .active = state else {
                    continuation.resume(throwing: StorageError(store: "local", message: "the gateway is shutting down"))
                    return
                }
                let filename = Digest.hex(Digest.sha256(bytes)) + "." + fileExtension(forMimeType: mimeType)
                continuation.resume(with: Result { try write(bytes, to: filename) }.map { _ in filename })
                // After the answer: the next image's file is made off its job's path.
                spares.refill()
            }
        }
        return StoredImage(filename: filename, url: url(for: filename), mimeType: mimeType)
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

    func write(_ bytes: [UInt8], to filename: String) throws {
        let target = path(for: filename)
        var existing = stat()
        // An equal image is already there: its mtime is refreshed, so that retention counts from
        // this use. Gone meanwhile (a sweep moved it aside to look again), it is written anew.
        if stat(target, &existing) == 0, existing.st_size == off_t(bytes.count), utimensat(AT_FDCWD, target, nil, 0) == 0 {
            return
        }
        // Not there, or not whole (a damaged or cut file under the name): written anew, and renamed over it.
        let file = try spares.take()
        let (temporary, fd) = (file.path, file.fd)
        let ok = writeAll(bytes, to: fd) && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw StorageError(store: "local", message: "cannot write \(filename): \(reason)")
        }
    }
}
