import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix

/// The workflows in `WORKFLOW_DIR` (every one a tool, those with a sketch node also drawing
/// styles), reloaded when files are added, changed or removed.
///
/// Each lookup asks the folder's inotify watch whether anything changed (one non-blocking
/// read; where the folder cannot be watched, it stats the folder and the loaded files) and
/// answers from the loaded set when nothing did: no lock is held across a suspension and no
/// task hops, so a style lookup costs microseconds. Only after a change is the folder listed
/// or a file read again, on NIO's thread pool, not the cooperative one. Edits take effect at
/// the next request without a restart.
public final class StyleLibrary: Sendable {
    public let directory: String
    /// Checked when a file is loaded: a style runs for anonymous painters without the checks a
    /// caller's workflow gets, so one the policy refuses (an `NODE_ALLOW` list) is left out.
    private let policy: NodePolicy?
    private let logger: Logger
    /// The loaded set; replaced whole when something changed, so a lookup holds the lock only
    /// to take a reference.
    // A pthread mutex, not `Mutex`: every style lookup takes it, and `Mutex` spins under contention (perf).
    private let current = NIOLockedValueBox(Current())
    /// The folder's change feed; `nil` where it cannot be watched (then stamps are compared).
    private let watch: FolderWatch?

    private struct Current {
        var snapshot = Snapshot(loaded: [:], listed: nil)
        /// Changes seen so far, and how many of them the snapshot was scanned after.
        var changes = 1
        var scanned = 0
    }

    private final class Snapshot: Sendable {
        let loaded: [String: (stamp: FileStamp, result: Result<StyleWorkflow, StyleWorkflow.Problem>)]
        /// The directory's own stamp at the last listing.
        let listed: FileStamp?
        /// Drawing styles.
        let names: [String]
        /// Every usable workflow, styles included.
        let tools: [WorkflowTool]
        let broken: [(file: String, reason: String)]

        init(loaded: [String: (stamp: FileStamp, result: Result<StyleWorkflow, StyleWorkflow.Problem>)], listed: FileStamp?) {
            self.loaded = loaded
            self.listed = listed
            tools = loaded.compactMap { _, entry in try? entry.result.get().tool }.sorted { $0.name < $1.name }
            names = loaded.compactMap { name, entry in (try? entry.result.get())?.isStyle == true ? name : nil }.sorted()
            broken = loaded.compactMap { name, entry in
                if case .failure(let problem) = entry.result { return ("\(name).json", problem.description) }
                return nil
            }.sorted { $0.file < $1.file }
        }
    }

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

    public init(directory: String, policy: NodePolicy? = nil, logger: Logger) {
        self.directory = directory
        self.policy = policy
        self.logger = logger
        watch = FolderWatch(directory: directory)
    }

    /// Style names, sorted.
    public func names() async -> [String] {
        await fresh().names
    }

    /// Every usable workflow as a tool, sorted by name.
    public func tools() async -> [WorkflowTool] {
        await fresh().tools
    }

    /// The tool of that name; `nil` when there is none.
    public func tool(_ name: String) async -> WorkflowTool? {
        guard StyleWorkflow.isValidName(name) else { return nil }
        return try? await fresh().loaded[name]?.result.get().tool
    }

    /// Style names and broken files from one look at the folder (`/healthz` asks for both).
    public func catalogue() async -> (names: [String], broken: [(file: String, reason: String)]) {
        let snapshot = await fresh()
        return (snapshot.names, snapshot.broken)
    }

    /// The style of that name; `nil` when there is none.
    public func style(_ name: String) async -> StyleWorkflow? {
        guard StyleWorkflow.isValidName(name), let style = try? await fresh().loaded[name]?.result.get(), style.isStyle else { return nil }
        return style
    }

    /// `realistic` when it exists, else the first style by name.
    public func defaultStyle() async -> StyleWorkflow? {
        let snapshot = await fresh()
        let name = snapshot.names.contains("realistic") ? "realistic" : snapshot.names.first ?? ""
        return try? snapshot.loaded[name]?.result.get()
    }

    /// The loaded set, scanned again first if the folder or a file changed.
    private func fresh() async -> Snapshot {
        let changed = watch?.drainChanges() ?? false
        let (snapshot, generation) = current.withLockedValue { current in
            if changed { current.changes += 1 }
            return (current.snapshot, current.scanned < current.changes ? current.changes : nil)
        }
        let unchanged: Bool
        if watch != nil {
            unchanged = generation == nil
        } else {
            unchanged = snapshot.listed != nil && FileStamp(path: directory) == snapshot.listed
                && snapshot.loaded.allSatisfy { FileStamp(path: "\(directory)/\($0.key).json") == $0.value.stamp }
        }
        if unchanged { return snapshot }
        let known = snapshot.loaded.mapValues(\.stamp)
        // With a watch the folder is listed again after any change; without one only when its stamp moved.
        let listed = watch == nil ? snapshot.listed : nil
        guard let scan = try? await NIOThreadPool.singleton.runIfActive({ [directory, policy] in
            Self.scan(directory, known: known, listed: listed, policy: policy)
        }) else { return snapshot }
        // Two lookups may scan the same change at once: the second finds nothing left to do.
        let (next, events) = current.withLockedValue { whole -> (Snapshot, [(name: String, loaded: Bool?, problem: String?)]) in
            if let generation { whole.scanned = max(whole.scanned, generation) }
            let current = whole.snapshot
            var loaded = current.loaded
            var events: [(String, Bool?, String?)] = []
            for (name, result) in scan.reloaded {
                guard let stamp = scan.present[name], loaded[name]?.stamp != stamp else { continue }
                loaded[name] = (stamp, result)
                switch result {
                case .success: events.append((name, true, nil))
                case .failure(let problem): events.append((name, false, problem.description))
                }
            }
            for name in loaded.keys where scan.present[name] == nil {
                loaded[name] = nil
                events.append((name, nil, nil))
            }
            whole.snapshot = Snapshot(loaded: loaded, listed: scan.directory)
            return (whole.snapshot, events)
        }
        for event in events {
            switch event.loaded {
            case true?: logger.info("style loaded", metadata: ["style": "\(event.name)"])
            case false?: logger.warning("style left out", metadata: ["style.file": "\(event.name).json", "reason": "\(event.problem ?? "")"])
            case nil: logger.info("style removed", metadata: ["style": "\(event.name)"])
            }
        }
        return next
    }

    /// Stats the folder; lists it only when it changed since `listed`, else stats the known files.
    static func scan(_ directory: String, known: [String: FileStamp], listed: FileStamp?, policy: NodePolicy?) -> Scan {
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
                scan.reloaded[name] = Result { () throws(StyleWorkflow.Problem) in
                    let style = try StyleWorkflow(name: name, bytes: Array(data))
                    do throws(WorkflowRejection) {
                        try policy?.check(style.workflow)
                    } catch {
                        throw StyleWorkflow.Problem(description: "refused by the node policy: \(error.message)")
                    }
                    return style
                }
            } else {
                scan.reloaded[name] = .failure(StyleWorkflow.Problem(description: "unreadable"))
            }
        }
        return scan
    }
}
