import Foundation
import Logging

/// The styles in `WORKFLOW_DIR`, reloaded when files are added, changed or removed.
///
/// Each lookup compares the directory's files (name, size, modification time) with what was
/// loaded, so edits take effect at the next request without a restart or a watcher thread.
public actor StyleLibrary {
    public let directory: String
    private let logger: Logger
    private var loaded: [String: (stamp: FileStamp, result: Result<StyleWorkflow, StyleWorkflow.Problem>)] = [:]

    struct FileStamp: Equatable {
        var size: Int
        var modified: timespec

        static func == (lhs: FileStamp, rhs: FileStamp) -> Bool {
            lhs.size == rhs.size && lhs.modified.tv_sec == rhs.modified.tv_sec && lhs.modified.tv_nsec == rhs.modified.tv_nsec
        }
    }

    public init(directory: String, logger: Logger) {
        self.directory = directory
        self.logger = logger
    }

    /// Style names, sorted.
    public func names() -> [String] {
        refresh()
        return loaded.compactMap { name, entry in (try? entry.result.get()) != nil ? name : nil }.sorted()
    }

    /// Files that are not usable styles, with the reason.
    public func broken() -> [(file: String, reason: String)] {
        refresh()
        return loaded.compactMap { name, entry in
            if case .failure(let problem) = entry.result { return ("\(name).json", problem.description) }
            return nil
        }.sorted { $0.file < $1.file }
    }

    /// The style of that name; `nil` when there is none.
    public func style(_ name: String) -> StyleWorkflow? {
        guard StyleWorkflow.isValidName(name) else { return nil }
        refresh()
        return try? loaded[name]?.result.get()
    }

    /// `realistic` when it exists, else the first style by name.
    public func defaultStyle() -> StyleWorkflow? {
        let available = names()
        return style(available.contains("realistic") ? "realistic" : available.first ?? "")
    }

    private func refresh() {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var seen: Set<String> = []
        for file in files where file.hasSuffix(".json") {
            let name = String(file.dropLast(5))
            guard StyleWorkflow.isValidName(name) else { continue }
            let path = "\(directory)/\(file)"
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            seen.insert(name)
            let stamp = FileStamp(size: Int(info.st_size), modified: info.st_mtim)
            if loaded[name]?.stamp == stamp { continue }
            let result: Result<StyleWorkflow, StyleWorkflow.Problem>
            if info.st_size > 8 << 20 {
                result = .failure(StyleWorkflow.Problem(description: "larger than 8 MiB"))
            } else if let data = FileManager.default.contents(atPath: path) {
                result = Result { () throws(StyleWorkflow.Problem) in try StyleWorkflow(name: name, bytes: Array(data)) }
            } else {
                result = .failure(StyleWorkflow.Problem(description: "unreadable"))
            }
            switch result {
            case .success: logger.info("style loaded", metadata: ["style": "\(name)"])
            case .failure(let problem): logger.warning("style left out", metadata: ["style.file": "\(file)", "reason": "\(problem)"])
            }
            loaded[name] = (stamp, result)
        }
        for name in loaded.keys where !seen.contains(name) {
            loaded[name] = nil
            logger.info("style removed", metadata: ["style": "\(name)"])
        }
    }
}
