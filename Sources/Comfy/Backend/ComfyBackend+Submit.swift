import Foundation
import NIOPosix

/// Running one job on this backend, start to image: one attempt.
extension ComfyBackend {
    /// The images of one job held at once, all together (one image is always kept).
    static let maxOutputBytes = 512 << 20

    /// Submits the job, waits for its image, and cleans up on ComfyUI whatever happens.
    ///
    /// A prompt lost to a dropped socket or a restarted ComfyUI fails with `promptLost`: the
    /// scheduler decides whether it runs again, here or elsewhere.
    public func run(_ job: PromptJob) async throws -> GeneratedImage {
        let deadline = ContinuousClock.now + job.timeout
        guard await waitUntilConnected(timeout: min(.seconds(5), deadline - .now)) else {
            throw ComfyError.unavailable(url, lastError ?? "no WebSocket connection")
        }
        var placedInFolder = false
        do {
            for upload in job.uploads {
                placedInFolder = try await place(upload) || placedInFolder
            }
            if !job.uploads.isEmpty { restCallEnded(nil) }
        } catch {
            restCallEnded(error)
            throw error
        }
        let promptID = UUID().uuidString.lowercased()
        // Not stored as sent when it cannot be sent now.
        _ = try openClientID()
        let sendBy = try await job.willSubmit?(promptID, url.description) ?? nil
        // The client id of the socket open now, not the one before the uploads: a socket opened
        // anew meanwhile has settled its prompts already, and one under the old id would hear
        // nothing until the stall timeout.
        let clientID = try openClientID()
        track(PromptWatch(promptID: promptID, job: job), clientID: clientID)
        let receipt: ComfyPromptReceipt
        do {
            receipt = try await rest.postPrompt(
                job, promptID: promptID, clientID: clientID, leftoverMark: job.endsWithProcess ? leftoverMark : nil, sendBy: sendBy
            )
            restCallEnded(nil)
        } catch {
            restCallEnded(error)
            abandon(promptID)
            // The prompt may have been queued before the answer was lost: it must not run for nobody.
            if (error as? ComfyError)?.code != .workflowInvalid, !(error is SubmitWindowClosed) { schedule(.cancel(promptID)) }
            // Refused, perhaps for an image it cannot find: the folder may no longer be shared (an unmounted volume).
            if placedInFolder, (error as? ComfyError)?.code == .workflowInvalid { inputFolderAccess = nil }
            throw error
        }
        if let wanted = job.outputNodeID, receipt.droppedOutputs.contains(wanted) {
            abandon(promptID)
            schedule(.cancel(promptID))
            var error = ComfyError(code: .workflowInvalid, message: "output node \(wanted) failed validation", backend: url.description)
            error.nodeErrors = ServerPathRedaction.redact(.object(receipt.nodeErrors))
            error.nodeID = wanted
            throw error
        }
        let watch = try await waitForEnding(promptID, deadline: deadline, timeout: job.timeout, keepsPrompt: job.keepsPromptWhenCancelled)
        if let image = try await image(from: watch) {
            if !job.keepsHistory { deleteHistory(promptID) }
            return image
        }
        if watch.missedEvents {
            throw ComfyError.promptLost(url, "its image was lost with the WebSocket")
        }
        throw ComfyError(code: .noImage, message: "output node \(job.outputNodeID ?? "(any)") produced no image", backend: url.description)
    }

    /// The client id of the socket open now; `unavailable` while it is down.
    private func openClientID() throws -> String {
        guard let clientID = tracker.clientID else { throw ComfyError.unavailable(url, lastError ?? "the WebSocket dropped") }
        return clientID
    }

    /// Takes up a prompt an earlier gateway process submitted here, by its id: its result comes
    /// from `/history` if it finished, is awaited if it still runs, and `promptLost` if ComfyUI
    /// no longer knows it (the scheduler then submits the job again).
    public func reattach(_ job: PromptJob, promptID: String) async throws -> GeneratedImage {
        let deadline = ContinuousClock.now + job.timeout
        guard await waitUntilConnected(timeout: min(.seconds(10), deadline - .now)) else {
            throw ComfyError.unavailable(url, lastError ?? "no WebSocket connection")
        }
        var watch = PromptWatch(promptID: promptID, job: job)
        // Its events went to the old process's socket: what it produced comes from /history.
        watch.missedEvents = true
        track(watch, clientID: "")
        schedule(.reconcile([promptID]))
        let ended = try await waitForEnding(promptID, deadline: deadline, timeout: job.timeout, keepsPrompt: job.keepsPromptWhenCancelled)
        if let image = try await image(from: ended) {
            if !job.keepsHistory { deleteHistory(promptID) }
            return image
        }
        throw ComfyError.promptLost(url, "its image went to the gateway process that submitted it")
    }

    /// Removes a prompt that no caller waits for any more from ComfyUI (queue, or interrupt).
    public func cancelPrompt(_ promptID: String) {
        schedule(.cancel(promptID))
    }

    /// The image without ComfyUI's graph, walked and copied on the thread pool.
    static func withoutWorkflowMetadata(_ image: ImageData) async -> ImageData {
        (try? await NIOThreadPool.singleton.runIfActive { WorkflowMetadata.removed(from: image) }) ?? image
    }

    /// The prompts waiting (not running) in ComfyUI's queue; `nil` when it does not answer.
    func waitingPrompts() async -> Set<String>? {
        guard let entries = try? await rest.queueEntries(timeout: .seconds(5)) else { return nil }
        return Set(entries.filter { !$0.isRunning }.map(\.promptID))
    }

    /// Removes a prompt that may have ended long ago: interrupted only if it is seen running.
    public func stopPrompt(_ promptID: String) {
        schedule(.stop(promptID))
    }

    /// Waits for the prompt's end; on timeout or cancellation removes it from ComfyUI.
    private func waitForEnding(_ promptID: String, deadline: ContinuousClock.Instant, timeout: Duration, keepsPrompt: Bool) async throws -> PromptWatch {
        let endings = self.endings
        do {
            return try await withDeadline(deadline, timeout: { ComfyError.timedOut(timeout) }) {
                try await endings.wait(for: promptID)
            }
        } catch let error as ComfyError where error.code == .timedOut {
            abandon(promptID)
            schedule(.cancel(promptID))
            throw error
        } catch is CancellationError {
            abandon(promptID)
            if !keepsPrompt { schedule(.cancel(promptID)) }
            throw ComfyError.cancelled
        }
    }

    /// Turns an ended watch into the wanted image, fetching it from `/view` when it is a file.
    private func image(from watch: PromptWatch) async throws -> GeneratedImage? {
        switch watch.ending {
        case .failed(let failure):
            if !watch.job.keepsHistory { deleteHistory(watch.promptID) }
            throw ComfyError.executionFailed(url, failure)
        case .interrupted:
            throw ComfyError(code: .interrupted, message: "the prompt was interrupted on ComfyUI", backend: url.description)
        case .success, nil:
            break
        }
        var images: [ImageData] = []
        var total = 0
        for product in watch.wantedProducts {
            var image: ImageData
            switch product {
            case .frame(_, let bytes, let mimeType):
                image = ImageData(bytes: bytes, mimeType: mimeType)
            case .file(_, let reference):
                do {
                    let (bytes, mimeType) = try await rest.view(reference)
                    image = ImageData(bytes: bytes, mimeType: mimeType)
                    restCallEnded(nil)
                } catch {
                    restCallEnded(error)
                    throw error
                }
            }
            if !keepsWorkflowMetadata {
                // A small image's chunks are walked here, with no hop off the actor; a large one's
                // walk and copy run on the thread pool, as the socket's events would wait meanwhile.
                image = image.bytes.count <= 4 << 20 ? WorkflowMetadata.removed(from: image) : await Self.withoutWorkflowMetadata(image)
            }
            // A batch of huge images must not hold gigabytes per job: the first always, then what fits.
            total += image.bytes.count
            guard images.isEmpty || total <= Self.maxOutputBytes else {
                logger.warning("a job's images exceed the output limit; the rest are left out", metadata: ["comfy.images": "\(images.count)"])
                break
            }
            images.append(image)
        }
        guard let first = images.first else { return nil }
        return GeneratedImage(
            bytes: first.bytes, mimeType: first.mimeType, others: Array(images.dropFirst()), promptID: watch.promptID, backend: url.description,
            nodeID: watch.wantedProduct?.node, executionMilliseconds: watch.executionMilliseconds
        )
    }
}
