import Foundation
import NIOPosix

/// Input images of calls: fetched or decoded, checked like sketches, kept under
/// `STATE_DIR/inputs` and named in the workflow as `<upload folder>/<name>.<ext>`, where the
/// name is an HMAC of the owner and the image's SHA-256 under a key of this gateway's: the
/// same image from one owner is stored once, and nobody can name (and so have uploaded, or
/// learn that it exists) another owner's input.
/// When the job runs, whichever backend it lands on gets them through `/upload/image`
/// (`uploads(for:)`), so a job survives a restart and may move between backends. On a shared
/// job store they are kept there too, for the instance that takes the job over. ComfyUI keeps
/// what it was given until removed: in a shared input folder (`COMFYUI_INPUT_DIR`) the gateway
/// removes its copies with its own; uploaded over HTTP, they stay (ComfyUI has no delete).
public struct InputImages: Sendable {
    public struct Limits: Sendable {
        public var maxBytes: Int
        public var maxPixels: Int
        /// The whole fetch of one URL, redirects included.
        public var fetchTimeout: Duration
        public var allowPrivate: Bool
        /// Never fetched from, whatever `allowPrivate` says.
        public var protected = ProtectedEndpoints.none
        public var maxRedirects = 3

        public init(maxBytes: Int, maxPixels: Int, fetchTimeout: Duration, allowPrivate: Bool) {
            self.maxBytes = maxBytes
            self.maxPixels = maxPixels
            self.fetchTimeout = fetchTimeout
            self.allowPrivate = allowPrivate
        }
    }

    /// Input images one job may carry, and all of them together at most `maxTotalBytes`.
    public static let maxPerJob = 16
    public var maxTotalBytes: Int { limits.maxBytes * 4 }

    let store: LocalImageStore
    let http: CurlHTTPClient
    /// The key names are made with (`STATE_DIR/input-names.key`).
    let namingKey: [UInt8]
    public let limits: Limits
    /// ComfyUI's input subfolder the gateway uploads to (`NodePolicy.uploadFolder`).
    public let folder: String
    /// Where every instance finds them, when several share a job store.
    let shared: (any SharedInputStore)?
    /// ComfyUI's input folder, when this machine shares it: the copies placed there.
    let comfyInputFolder: ComfyInputFolder?
    /// The fetch client's threads, shared out among callers: one caller's trickling servers
    /// would otherwise hold them all for `fetchTimeout`, and fail everyone else's URLs.
    let fetchShares: OwnerShares

    public init(
        directory: String, http: CurlHTTPClient, limits: Limits, folder: String, namingKey: [UInt8], shared: (any SharedInputStore)? = nil,
        comfyInputFolder: ComfyInputFolder? = nil
    ) {
        // As many as one request fetches side by side (`JobAdmission`), and a quarter at most:
        // four callers' trickling servers to fill them, each held back by the fetch's low-speed
        // limit, and a freed place goes to a caller running fewer.
        fetchShares = OwnerShares(perOwner: max(1, min(4, http.threadCount / 4)), capacity: http.threadCount)
        self.shared = shared
        self.comfyInputFolder = comfyInputFolder
        store = LocalImageStore(directory: directory, baseURL: "")
        self.http = http
        self.namingKey = namingKey
        self.limits = limits
        self.folder = folder
    }

    /// Takes one image argument (URL, data URL or base64) of `owner`'s and answers the
    /// `LoadImage` value for it. A URL is fetched by `deadline` (`INPUT_URL_TIMEOUT` from now
    /// when not given: a request's images share one).
    public func accept(_ value: String, field: String, owner: String, by deadline: ContinuousClock.Instant? = nil) async throws -> String {
        switch try InputImageSource.parse(value, field: field, maxBytes: limits.maxBytes) {
        case .bytes(let bytes): return try await accept(bytes: bytes, field: field, owner: owner)
        case .url(let url):
            let bytes = try await fetch(url, field: field, owner: owner, by: deadline ?? .now + limits.fetchTimeout)
            return try await accept(bytes: bytes, field: field, owner: owner)
        }
    }

    /// Takes an image's bytes (an upload, or what a URL gave) and answers the `LoadImage` value for it.
    public func accept(bytes given: [UInt8], field: String, owner: String) async throws -> String {
        let bytes = ImageProbe.firstPicture(given)
        guard bytes.count <= limits.maxBytes else { throw InputImageError(.tooLarge, field: field, "\(field) is larger than \(limits.maxBytes) bytes") }
        let probe: ImageProbe
        do {
            probe = try ImageProbe.probe(bytes)
        } catch {
            throw InputImageError(.invalid, field: field, "\(field) is not a usable image: \(error)")
        }
        guard let pixels = probe.pixels, pixels <= limits.maxPixels else {
            throw InputImageError(.tooLarge, field: field, "\(field) is \(probe.width)×\(probe.height) pixels; at most \(limits.maxPixels) pixels are accepted")
        }
        let filename = name(of: bytes, owner: owner) + "." + fileExtension(forMimeType: probe.mimeType)
        try await NIOThreadPool.singleton.runIfActive { [store] in try store.write(bytes, to: filename) }
        try await shared?.saveInput(bytes, named: filename)
        return "\(folder)/\(filename)"
    }

    /// 64 hex digits: HMAC-SHA256 under the naming key of the owner and the image's SHA-256.
    func name(of bytes: [UInt8], owner: String) -> String {
        Digest.hex(Digest.hmacSHA256(key: namingKey, message: Array(owner.utf8) + [0] + Digest.sha256(bytes)))
    }

    /// The uploads a workflow needs: every loader input naming one of the stored inputs.
    public func uploads(for workflow: [String: JSONValue]) async throws -> [PromptUpload] {
        var names: Set<String> = []
        for node in workflow.values where NodePolicy.loaderClasses.contains(node["class_type"]?.stringValue ?? "") {
            for (input, value) in node["inputs"]?.objectValue ?? [:] where NodePolicy.uploadInputs.contains(input) {
                if let name = value.stringValue, let file = storedName(name) { names.insert(file) }
            }
        }
        // Names in a raw workflow count too: many small stored inputs must not add up to one huge job.
        guard names.count <= Self.maxPerJob else {
            throw InputImageError(.tooLarge, field: "workflow_data", "the workflow names \(names.count) input images; at most \(Self.maxPerJob) are accepted")
        }
        var uploads: [PromptUpload] = []
        var total = 0
        for name in names.sorted() {
            // Gone past retention: ComfyUI then names the missing file in its validation error.
            guard let bytes = try await stored(name) else { continue }
            total += bytes.count
            guard total <= maxTotalBytes else {
                throw InputImageError(.tooLarge, field: "workflow_data", "the workflow's input images exceed \(maxTotalBytes) bytes together")
            }
            uploads.append(PromptUpload(subfolder: folder, filename: name, bytes: bytes, mimeType: Self.mimeType(ofFile: name)))
        }
        return uploads
    }

    /// An input's bytes from this instance's folder, else from the shared store (kept here after).
    private func stored(_ name: String) async throws -> [UInt8]? {
        if let bytes = try await store.read(name) { return bytes }
        guard let bytes = try await shared?.input(named: name) else { return nil }
        try? await NIOThreadPool.singleton.runIfActive { [store] in try store.write(bytes, to: name) }
        return bytes
    }

    /// Removes inputs not used since `date` (a reused input's time is refreshed when it is stored
    /// again), and their copies in a shared ComfyUI input folder not placed since (placing one
    /// refreshes its time too, so a job about to load it keeps it). Returns how many of the
    /// gateway's own went. (The output folder's sweeper: the names and the writes are the same.)
    public func removeUnused(before date: Date) async -> Int {
        let now = Date()
        let retention = Duration.seconds(max(0, now.timeIntervalSince(date)))
        let comfyCopies = comfyInputFolder.map { "\($0.path)/\(folder)" }
        let local = (try? await NIOThreadPool.singleton.runIfActive { [store] in
            // Not through a link: the gateway writes there only through plain folders.
            var status = stat()
            if let comfyCopies, lstat(comfyCopies, &status) == 0, status.st_mode & S_IFMT == S_IFDIR {
                _ = RetentionSweeper(directory: comfyCopies, retention: retention).sweep(now: now)
            }
            return RetentionSweeper(directory: store.directory, retention: retention).sweep(now: now).removed.count
        }) ?? 0
        let fromStore = (try? await shared?.removeInputs(unusedSince: date)) ?? 0
        return local + fromStore
    }

    /// `folder/<64 hex>.<png|jpg|webp>` → the file name; anything else is not ours.
    func storedName(_ value: String) -> String? {
        guard value.hasPrefix(folder + "/") else { return nil }
        let name = String(value.dropFirst(folder.count + 1))
        return Self.isHandedOutName(name) ? name : nil
    }

    /// Whether `name` has the form of the names `accept` hands out: 64 hex digits and an image's extension.
    public static func isHandedOutName(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 2 && parts[0].utf8.count == 64
            && parts[0].utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
            && ["png", "jpg", "webp"].contains(parts[1])
    }

    static func mimeType(ofFile name: String) -> String {
        name.hasSuffix(".png") ? "image/png" : name.hasSuffix(".webp") ? "image/webp" : "image/jpeg"
    }
}
