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
            if unlink(path) == 0 || errno == ENOENT {
                report.removed.append(name)
            } else {
                report.failed.append(name)
            }
        }
        return report
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
