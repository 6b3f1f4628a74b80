/// Which models this backend has: read at each connect and every `modelRefreshInterval`.
extension ComfyBackend {
    static let modelRefreshInterval: Duration = .seconds(60)

    func refreshModels() async {
        do {
            let catalogue = try await rest.models()
            let before = modelsBox.withLockedValue { current in
                defer { current = catalogue }
                return current
            }
            if catalogue != before {
                logger.info("ComfyUI models read", metadata: ["comfy.checkpoints": "\(catalogue?.folders["checkpoints"]?.count ?? 0)"])
                modelsContinuation.yield()
            }
        } catch {
            // Kept as last read: a failed refresh says nothing about the files.
            logger.notice("ComfyUI models could not be read", metadata: ["error": "\(error)"])
        }
    }

    /// Reads the models again every `modelRefreshInterval` until cancelled (files are added while it runs).
    func watchModels() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.modelRefreshInterval)
            if isConnected { await refreshModels() }
        }
    }
}
