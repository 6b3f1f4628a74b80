import Foundation
import Synchronization

/// Empty files made ahead of the image writes that fill them.
///
/// Creating a file is a search for a free inode, and it can be slow: ext4 without a journal
/// skips, one by one, every inode freed in the last minute (longer while its block is unwritten),
/// so after a mass deletion (a retention sweep, a cleanup) a create costs 200–400 µs instead of
/// 10 µs for a while (measured here). A spare is made after a write has given its answer, so
/// the next job's write finds its file ready and that time is off its path.
final class SpareFiles: Sendable {
    struct File: Sendable {
        let path: String
        let fd: Int32
        let madeAt: ContinuousClock.Instant
    }

    /// Spares kept at most: one serves jobs one after another, a second covers writes that overlap.
    static let maxKept = 2
    /// A spare this old is not used: the retention sweep takes `.tmp-*` files past an hour for
    /// a crashed write's leftovers, and one in use must not be taken.
    static let maxAge: Duration = .seconds(600)
    /// Spares' names start so (a temporary file, to the retention sweep): empty, they are no image, partial or whole.
    static let prefix = ".tmp-spare-"

    private let directory: String
    private let maxAge: Duration
    /// The spares ready; `nil` once discarded (no more are made).
    private let files = Mutex<[File]?>([])

    init(directory: String, maxAge: Duration = SpareFiles.maxAge) {
        self.directory = directory
        self.maxAge = maxAge
    }

    deinit {
        discard()
    }

    /// A spare younger than `maxAge` (older ones are removed), or a file made now. Blocking.
    func take() throws(StorageError) -> File {
        let now = ContinuousClock.now
        let (fresh, stale) = files.withLock { files -> (File?, [File]) in
            let stale = files?.filter { now - $0.madeAt >= maxAge } ?? []
            files?.removeAll { now - $0.madeAt >= maxAge }
            return (files?.popLast(), stale)
        }
        remove(stale)
        if let fresh { return fresh }
        return try make(prefix: ".tmp-")
    }

    /// Makes a spare unless `maxKept` are ready. Blocking: called after a write has answered.
    func refill() {
        guard files.withLock({ ($0?.count ?? Self.maxKept) < Self.maxKept }), let file = try? make(prefix: Self.prefix) else { return }
        let unwanted = files.withLock { files -> File? in
            // Another refill or a discard came first.
            guard let count = files?.count, count < Self.maxKept else { return file }
            files?.append(file)
            return nil
        }
        if let unwanted { remove([unwanted]) }
    }

    /// Removes the spares; none is made any more (the store is done with).
    func discard() {
        remove(files.withLock { files in
            defer { files = nil }
            return files ?? []
        })
    }

    private func make(prefix: String) throws(StorageError) -> File {
        let path = "\(directory)/\(prefix)\(UUID().uuidString)"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw StorageError(store: "local", message: "cannot create a file in the image folder: \(String(cString: strerror(errno)))")
        }
        return File(path: path, fd: fd, madeAt: .now)
    }

    private func remove(_ stale: [File]) {
        for file in stale {
            close(file.fd)
            unlink(file.path)
        }
    }
}
