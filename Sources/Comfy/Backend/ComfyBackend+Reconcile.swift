/// Settling prompts whose events may have been missed while the WebSocket was down.
extension ComfyBackend {
    /// For each prompt: still queued → keep waiting (the new socket has another client id, so
    /// poll until it ends); finished → settle from `/history`; unknown → lost.
    func reconcile(_ promptIDs: [String]) async {
        await withTaskGroup(of: Void.self) { group in
            for promptID in promptIDs {
                group.addTask { await self.reconcile(promptID) }
            }
        }
    }

    private func reconcile(_ promptID: String) async {
        var pollInterval = Duration.milliseconds(50)
        while let slot = tracker.slot(promptID), slot.watch.ending == nil, !Task.isCancelled {
            do {
                // The queue first, then the history: ComfyUI moves an ending prompt from its queue
                // into its history in one step (`PromptQueue.task_done`), so one gone from the
                // queue is in the history when that is read. Read the other way round, a prompt
                // that ended between the reads was in neither, called lost and submitted again.
                guard try await rest.isQueued(promptID) else {
                    if let entry = try await rest.history(promptID) {
                        settle(promptID, from: entry)
                    } else {
                        fail(promptID, with: ComfyError.promptLost(url, "ComfyUI no longer knows it"))
                    }
                    return
                }
                // Queued under a client id whose socket is gone: its events go nowhere, so ask
                // until it ends. Under the current socket's id, events arrive again.
                if slot.clientID == tracker.clientID { return }
            } catch {
                if !isConnected { return }  // the next connection reconciles again
            }
            try? await Task.sleep(for: pollInterval)
            pollInterval = min(pollInterval * 2, .milliseconds(500))
        }
    }

    private func settle(_ promptID: String, from entry: ComfyHistoryEntry) {
        switch entry.outcome {
        case .success, .unknown:
            execute(tracker.settle(promptID, .success, files: entry.images, executionMilliseconds: entry.executionMilliseconds))
        case .failed(let failure):
            execute(tracker.settle(promptID, .failed(failure), files: [:]))
        case .interrupted:
            execute(tracker.settle(promptID, .interrupted, files: [:]))
        }
    }
}
