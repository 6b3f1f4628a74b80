import Foundation

/// Keeping `monitor` (the health rules) fed with what the backend observes, and acting on it.
extension ComfyBackend {
    var health: BackendHealth { monitor.health }

    /// Probes `/system_stats` every `probeInterval` and re-evaluates the timers until cancelled.
    func watchHealth() async {
        var lastProbe = ContinuousClock.now - timing.probeInterval
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            if Task.isCancelled { return }
            if ContinuousClock.now - lastProbe >= timing.probeInterval || monitor.probeFailures > 0 && ContinuousClock.now - lastProbe >= .seconds(1) {
                lastProbe = .now
                await probe()
            }
            await act(on: monitor.tick(at: .now))
            publishHealth()
        }
    }

    private func probe() async {
        do {
            let response = try await call("GET", "/system_stats", timeout: .seconds(3))
            guard response.status == 200 else { throw ComfyError.badResponse(url, "GET /system_stats returned HTTP \(response.status)") }
            monitor.probed(ok: true)
        } catch {
            monitor.probed(ok: false)
            lastError = "\(error)"
            if monitor.probeFailures == 2 { logger.warning("ComfyUI probe failing", metadata: ["error": "\(error)"]) }
        }
    }

    private func act(on action: BackendHealthMonitor.Action) async {
        switch action {
        case .none:
            return
        case .failOver:
            logger.warning("ComfyUI still unreachable; moving its prompts", metadata: ["comfy.in_flight": "\(slots.count)"])
            failAll(with: ComfyError.unavailable(url, lastError ?? "WebSocket lost"), cancelOnServer: false)
        case .stalled:
            // A node may run long without a word; ComfyUI's queue tells a slow node from a stuck worker.
            if await isRunningOurs() {
                monitor.confirmedRunning(at: .now)
                return
            }
            let seconds = timing.stallTimeout.components.seconds
            lastError = "no progress on its prompts for \(seconds) s"
            logger.warning("ComfyUI stalled; moving its prompts", metadata: ["comfy.in_flight": "\(slots.count)"])
            failAll(with: ComfyError.unavailable(url, "stalled: no progress for \(seconds) s"), cancelOnServer: true)
        }
    }

    /// Whether ComfyUI's `/queue` shows one of our prompts running.
    private func isRunningOurs() async -> Bool {
        guard let response = try? await call("GET", "/queue", timeout: .seconds(3)), response.status == 200,
              let queue = try? JSONValue.parse(response.body)
        else { return false }
        let running = (queue["queue_running"]?.arrayValue ?? []).compactMap { $0.arrayValue?.dropFirst().first?.stringValue }
        return running.contains { slots[$0] != nil }
    }

    /// Tells the pool when the health changed.
    func publishHealth() {
        let now = health
        guard now != publishedHealth else { return }
        publishedHealth = now
        healthContinuation.yield(now)
    }
}
