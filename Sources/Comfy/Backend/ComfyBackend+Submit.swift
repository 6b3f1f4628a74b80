import Foundation

/// Running one job on this backend, start to image.
extension ComfyBackend {
    /// Submits the job, waits for its image, and cleans up on ComfyUI whatever happens.
    ///
    /// A prompt lost to a dropped socket or a restarted ComfyUI is submitted again (ComfyUI's
    /// cache makes the rerun cheap), a bounded number of times, within the job's timeout.
    public func run(_ job: PromptJob, maxAttempts: Int = 3) async throws -> GeneratedImage {
        let deadline = ContinuousClock.now + job.timeout
        for attempt in 1...maxAttempts {
            guard await waitUntilConnected(timeout: min(.seconds(5), deadline - .now)), let clientID else {
                throw ComfyError.unavailable(url, lastError ?? "no WebSocket connection")
            }
            for upload in job.uploads {
                try await self.upload(upload)
            }
            let promptID = UUID().uuidString.lowercased()
            register(PromptWatch(promptID: promptID, job: job), clientID: clientID)
            let receipt: ComfyPromptReceipt
            do {
                receipt = try await postPrompt(job, promptID: promptID, clientID: clientID)
            } catch {
                fail(promptID, with: error)
                // The prompt may have been queued before the answer was lost: it must not run for nobody.
                if (error as? ComfyError)?.code != .workflowInvalid { Task { await cancelOnServer(promptID) } }
                throw error
            }
            if let wanted = job.outputNodeID, receipt.droppedOutputs.contains(wanted) {
                fail(promptID, with: ComfyError.cancelled)
                Task { await cancelOnServer(promptID) }
                var error = ComfyError(code: .workflowInvalid, message: "output node \(wanted) failed validation", backend: url.description)
                error.nodeErrors = ServerPathRedaction.redact(.object(receipt.nodeErrors))
                error.nodeID = wanted
                throw error
            }
            do {
                let watch = try await waitForEnding(promptID, deadline: deadline, timeout: job.timeout)
                if let image = try await image(from: watch) {
                    Task { await deleteHistory(promptID) }
                    return image
                }
                // The wanted frame was lost with the socket: rerun unless out of attempts.
                if !watch.missedEvents || attempt == maxAttempts {
                    throw ComfyError(code: .noImage, message: "output node \(job.outputNodeID ?? "(any)") produced no image", backend: url.description)
                }
            } catch is PromptLost where attempt < maxAttempts {
                logger.notice("ComfyUI lost a prompt; submitting it again", metadata: ["comfy.prompt_id": "\(promptID)"])
            }
        }
        throw ComfyError.unavailable(url, "the prompt was lost \(maxAttempts) times")
    }

    /// Waits for the prompt's end; on timeout or cancellation removes it from ComfyUI first.
    private func waitForEnding(_ promptID: String, deadline: ContinuousClock.Instant, timeout: Duration) async throws -> PromptWatch {
        let timer = Task {
            try await Task.sleep(until: deadline)
            self.fail(promptID, with: ComfyError.timedOut(timeout))
        }
        defer { timer.cancel() }
        do {
            return try await withTaskCancellationHandler {
                try await awaitEnding(promptID)
            } onCancel: {
                Task { await self.fail(promptID, with: ComfyError.cancelled) }
            }
        } catch let error as ComfyError where error.code == .timedOut || error.code == .cancelled {
            // Not in this task's tree: the cleanup must outlive a cancelled caller.
            Task { await cancelOnServer(promptID) }
            throw error
        }
    }

    /// Turns an ended watch into the wanted image, fetching it from `/view` when it is a file.
    private func image(from watch: PromptWatch) async throws -> GeneratedImage? {
        switch watch.ending {
        case .failed(let failure):
            Task { await deleteHistory(watch.promptID) }
            throw ComfyError.executionFailed(url, failure)
        case .interrupted:
            throw ComfyError(code: .interrupted, message: "the prompt was interrupted on ComfyUI", backend: url.description)
        case .success, nil:
            break
        }
        switch watch.wantedProduct {
        case .frame(let node, let bytes, let mimeType):
            return GeneratedImage(bytes: bytes, mimeType: mimeType, promptID: watch.promptID, backend: url.description, nodeID: node)
        case .file(let node, let reference):
            let (bytes, mimeType) = try await view(reference)
            return GeneratedImage(bytes: bytes, mimeType: mimeType, promptID: watch.promptID, backend: url.description, nodeID: node)
        case nil:
            return nil
        }
    }
}
