import Foundation

/// Keeping `monitor` (the health rules) fed with what the backend observes, and acting on it.
extension ComfyBackend {
    var health: BackendHealth { monitor.health }

    /// Probes `/system_stats` every `probeInterval` (every second while it fails) and acts on the
    /// health rules' deadlines, until cancelled. It sleeps until the next probe or deadline,
    /// and wakes early when the socket or the prompts in flight change (`nudgeHealth`).
    func watchHealth() async {
        var nextProbe = ContinuousClock.now
        while !Task.isCancelled {
            if ContinuousClock.now >= nextProbe {
                await probe()
                nextProbe = .now + (monitor.probeFailures > 0 ? min(.seconds(1), timing.probeInterval) : timing.probeInterval)
            }
            let wasOut = monitor.restOutUntil != nil
            await act(on: monitor.tick(at: .now))
            // The cooloff is over: its reason no longer stands in `/healthz`.
            if wasOut, monitor.restOutUntil == nil { record(error: nil) }
            publishHealth()
            let wake = min(nextProbe, monitor.nextDeadline ?? nextProbe)
            _ = await healthNudges.wait(for: 0, until: wake)
        }
    }

    /// A job's REST call ended. ComfyUI's own fault (`ComfyError.isServerFault`) counts toward
    /// taking the backend out (`BackendHealthMonitor.restCall`); an answer, even a refusal,
    /// resets that; anything else (a cancel, what the job brought on) says nothing of ComfyUI.
    func restCallEnded(_ error: (any Error)?) {
        let ok: Bool
        switch error {
        case nil: ok = true
        case let error as ComfyError where error.isServerFault: ok = false
        case let error as ComfyError where error.code == .workflowInvalid || error.code == .noImage: ok = true
        default: return
        }
        guard monitor.restCall(ok: ok, at: .now), let error else { return }
        let reason = "its REST calls failed \(BackendHealthMonitor.restFailureLimit) times in a row (\(error)); out for \(timing.restCooloff.components.seconds) s"
        record(error: reason)
        logger.warning("ComfyUI's REST calls keep failing; taking it out", metadata: ["error": "\(error)"])
        nudgeHealth()
        publishHealth()
    }

    /// Something the health rules time changed: `watchHealth` looks again now.
    func nudgeHealth() {
        healthNudges.resume(0, with: .success(()))
    }

    private func probe() async {
        do {
            try await rest.probe()
            monitor.probed(ok: true)
        } catch {
            monitor.probed(ok: false)
            record(error: "\(error)")
            if monitor.probeFailures == 2 { logger.warning("ComfyUI probe failing", metadata: ["error": "\(error)"]) }
        }
    }

    private func act(on action: BackendHealthMonitor.Action) async {
        switch action {
        case .none:
            return
        case .failOver:
            logger.warning("ComfyUI still unreachable; moving its prompts", metadata: ["comfy.in_flight": "\(tracker.count)"])
            failAll(with: ComfyError.unavailable(url, lastError ?? "WebSocket lost"), cancelOnServer: false)
        case .stalled:
            // A node may run long without a word; ComfyUI's queue tells a slow node from a stuck worker.
            if await isRunningOurs() {
                monitor.confirmedRunning(at: .now)
                return
            }
            let seconds = timing.stallTimeout.components.seconds
            record(error: "no progress on its prompts for \(seconds) s")
            logger.warning("ComfyUI stalled; moving its prompts", metadata: ["comfy.in_flight": "\(tracker.count)"])
            failAll(with: ComfyError.unavailable(url, "stalled: no progress for \(seconds) s"), cancelOnServer: true)
        }
    }

    /// Whether ComfyUI's `/queue` shows one of our prompts running.
    private func isRunningOurs() async -> Bool {
        guard let queue = try? await rest.queue(timeout: .seconds(3)) else { return false }
        return queue.running.contains { tracker.slot($0) != nil }
    }

    /// Tells the pool when the health changed.
    func publishHealth() {
        let now = health
        guard now != publishedHealth else { return }
        publishedHealth = now
        healthContinuation.yield(now)
    }
}
