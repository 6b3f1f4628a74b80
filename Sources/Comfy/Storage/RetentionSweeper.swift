import Foundation

/// The retention policy of `OUTPUT_DIR` as a plain function of "now", so tests need no waiting:
/// finished images (`<64 hex>.png|jpg|webp|gif`) older than `retention` and temporary
/// files (`.tmp-*`) older than an hour are removed; nothing else, and nothing younger, ever is.
public struct RetentionSweeper: Sendable {
    /// What one sweep did.
    public struct Report: Sendable, Equatable {
        /// File names removed, in name order.
        public var removed: [String] = []
        /// Files that should have gone but could not be removed.
        public var failed: [String] = []
    }

    public let directory: String
    /// How long after its last write (mtime) a finished image is kept.
    public let retention: Duration
    /// How old a temporary file must be before it is taken for the leftover of a crashed write.
    public let temporaryFileAge: Duration

    public init(directory: String, retention: Duration, temporaryFileAge: Duration = .seconds(3600)) {
        self.directory = directory
        self.retention = retention
        self.temporaryFileAge = temporaryFileAge
    }

    /// Removes what is due at `now`, except the file names in `keep` (results still referenced).
    public func sweep(now: Date, keep: Set<String> = []) -> Report {
        sweep(now: now, keep: keep, afterLooking: { _ in })
    }

    /// `afterLooking` runs between a due file's look and its removal (for tests: an image stored
    /// again just then).
    func sweep(now: Date, keep: Set<String>, afterLooking: (String) -> Void) -> Report {
        var report = Report()
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return report }
        for name in names.sorted() where !keep.contains(name) {
            let limit: Duration
            if Self.isImageFileName(name) {
                limit = retention
            } else if name.hasPrefix(".tmp-") {
                limit = temporaryFileAge
            } else {
                continue
            }
            let path = "\(directory)/\(name)"
            var status = stat()
            // lstat: a symlink is never followed, and only regular files are candidates.
            guard lstat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else { continue }
            let modified = Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9
            guard now.timeIntervalSince1970 - modified > Self.seconds(limit) else { continue }
            afterLooking(name)
            switch Self.isImageFileName(name) ? removeUnlessRefreshed(path, since: status) : (unlink(path) == 0 || errno == ENOENT) {
            case true: report.removed.append(name)
            case false: report.failed.append(name)
            case nil: break
            }
        }
        return report
    }

    /// An image's removal: an equal image stored since the look refreshed its time instead of
    /// writing it again (`LocalImageStore`), and its caller has its URL. Moved aside first, it is
    /// looked at again where no store finds it; refreshed, it goes back. `nil`: it was kept.
    private func removeUnlessRefreshed(_ path: String, since looked: stat) -> Bool? {
        // A `.tmp-` name: should the gateway stop right here, the next sweeps take it within the hour.
        let aside = "\(directory)/.tmp-sweep-\(UUID().uuidString)"
        guard rename(path, aside) == 0 else { return errno == ENOENT }
        var now = stat()
        if lstat(aside, &now) == 0, now.st_mtim.tv_sec != looked.st_mtim.tv_sec || now.st_mtim.tv_nsec != looked.st_mtim.tv_nsec {
            // Over any copy written meanwhile: the name is the content's hash, the bytes are the same.
            return rename(aside, path) == 0 ? nil : false
        }
        return unlink(aside) == 0 || errno == ENOENT
    }

    /// `<64 lower-case hex>.png|jpg|webp|gif`: the names the image stores write (and nginx serves).
    public static func isImageFileName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard bytes.count > 65, bytes[64] == UInt8(ascii: ".") else { return false }
        for byte in bytes[..<64] {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte) else { return false }
        }
        return ["png", "jpg", "webp", "gif"].contains(String(decoding: bytes[65...], as: UTF8.self))
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
