/// Settling prompts whose events may have been missed while the WebSocket was down.
extension ComfyBackend {
    /// For each prompt: finished → settle from `/history`; still queued → keep waiting (the new
    /// socket has another client id, so poll history until it ends); unknown → run it again.
    func reconcile(_ promptIDs: [String]) async {
        await withTaskGroup(of: Void.self) { group in
            for promptID in promptIDs {
                group.addTask { await self.reconcile(promptID) }
            }
        }
    }

    private func reconcile(_ promptID: String) async {
        var pollInterval = Duration.milliseconds(50)
        while let slot = slot(promptID), slot.watch.ending == nil {
            do {
                if let entry = try await history(promptID) {
                    switch entry.outcome {
                    case .success, .unknown:
                        markEnded(promptID, .success, files: entry.images)
                    case .failed(let failure):
                        markEnded(promptID, .failed(failure), files: [:])
                    case .interrupted:
                        markEnded(promptID, .interrupted, files: [:])
                    }
                    return
                }
                guard try await isQueued(promptID) else {
                    fail(promptID, with: PromptLost())
                    return
                }
                // Queued under a client id whose socket is gone: its events go nowhere.
                if slot.clientID == clientID { return }
            } catch {
                if !isConnected { return }  // the next connection reconciles again
            }
            try? await Task.sleep(for: pollInterval)
            pollInterval = min(pollInterval * 2, .milliseconds(500))
        }
    }
}

/// ComfyUI no longer knows a prompt (it restarted, or it was dropped): run it again.
struct PromptLost: Error {}
