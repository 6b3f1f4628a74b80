import Foundation
import Logging
import NIOPosix

/// The styles in `WORKFLOW_DIR`, reloaded when files are added, changed or removed.
///
/// Each lookup stats the directory and the loaded files (on NIO's thread pool, not the
/// cooperative one); the folder is listed again only when its own modification time changed,
/// and a file is read again only when its size or modification time did. Edits take effect at
/// the next request without a restart or a watcher thread.
public actor StyleLibrary {
    public let directory: String
    private let logger: Logger
    private var loaded: [String: (stamp: FileStamp, result: Result<StyleWorkflow, StyleWorkflow.Problem>)] = [:]
    /// The directory's own stamp at the last listing.
    private var listed: FileStamp?

    struct FileStamp: Equatable, Sendable {
        var size: Int
        var seconds: Int
        var nanoseconds: Int

        init?(path: String) {
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }
            size = Int(info.st_size)
            seconds = Int(info.st_mtim.tv_sec)
            nanoseconds = Int(info.st_mtim.tv_nsec)
        }
    }

    /// What one look at the folder found.
    struct Scan: Sendable {
        var directory: FileStamp?
        /// Every style file there, with its stamp.
        var present: [String: FileStamp] = [:]
        /// Files read again: new or changed.
        var reloaded: [String: Result<StyleWorkflow, StyleWorkflow.Problem>] = [:]
    }

    public init(directory: String, logger: Logger) {
        self.directory = directory
        self.logger = logger
    }

    /// Style names, sorted.
    public func names() async -> [String] {
        await refresh()
        return loaded.compactMap { name, entry in (try? entry.result.get()) != nil ? name : nil }.sorted()
    }

    /// Files that are not usable styles, with the reason.
    public func broken() async -> [(file: String, reason: String)] {
        await refresh()
        return loaded.compactMap { name, entry in
            if case .failure(let problem) = entry.result { return ("\(name).json", problem.description) }
            return nil
        }.sorted { $0.file < $1.file }
    }

    /// The style of that name; `nil` when there is none.
    public func style(_ name: String) async -> StyleWorkflow? {
        guard StyleWorkflow.isValidName(name) else { return nil }
        await refresh()
        return try? loaded[name]?.result.get()
    }

    /// `realistic` when it exists, else the first style by name.
    public func defaultStyle() async -> StyleWorkflow? {
        let available = await names()
        let name = available.contains("realistic") ? "realistic" : available.first ?? ""
        return try? loaded[name]?.result.get()
    }

    private func refresh() async {
        let known = loaded.mapValues(\.stamp)
        let listed = self.listed
        guard let scan = try? await NIOThreadPool.singleton.runIfActive({ [directory] in
            Self.scan(directory, known: known, listed: listed)
        }) else { return }
        self.listed = scan.directory
        for (name, result) in scan.reloaded {
            switch result {
            case .success: logger.info("style loaded", metadata: ["style": "\(name)"])
            case .failure(let problem): logger.warning("style left out", metadata: ["style.file": "\(name).json", "reason": "\(problem)"])
            }
            if let stamp = scan.present[name] { loaded[name] = (stamp, result) }
        }
        for name in loaded.keys where scan.present[name] == nil {
            loaded[name] = nil
            logger.info("style removed", metadata: ["style": "\(name)"])
        }
    }

    /// Stats the folder; lists it only when it changed since `listed`, else stats the known files.
    static func scan(_ directory: String, known: [String: FileStamp], listed: FileStamp?) -> Scan {
        var scan = Scan(directory: FileStamp(path: directory))
        let names: [String]
        if let stamp = scan.directory, stamp == listed {
            names = Array(known.keys)
        } else {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            names = files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.filter(StyleWorkflow.isValidName)
        }
        for name in names {
            let path = "\(directory)/\(name).json"
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, let stamp = FileStamp(path: path) else { continue }
            scan.present[name] = stamp
            if known[name] == stamp { continue }
            if info.st_size > 8 << 20 {
                scan.reloaded[name] = .failure(StyleWorkflow.Problem(description: "larger than 8 MiB"))
            } else if let data = FileManager.default.contents(atPath: path) {
                scan.reloaded[name] = Result { () throws(StyleWorkflow.Problem) in try StyleWorkflow(name: name, bytes: Array(data)) }
            } else {
                scan.reloaded[name] = .failure(StyleWorkflow.Problem(description: "unreadable"))
            }
        }
        return scan
    }
}
