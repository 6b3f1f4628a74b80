import Foundation

/// Whether the backend should take jobs: its WebSocket, a light probe and a stall watchdog.
extension ComfyBackend {
    /// The health the scheduler acts on.
    var health: BackendHealth {
        isConnected && probeFailures < 2 && !isStalled ? .up : .down
    }

    /// Probes `/system_stats` and watches for stalls until cancelled.
    func watchHealth() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: min(timing.probeInterval, timing.stallTimeout / 4))
            if Task.isCancelled { return }
            await probe()
            checkStall(now: .now)
            publishHealth()
        }
    }

    private func probe() async {
        guard ContinuousClock.now - lastProbe >= timing.probeInterval || probeFailures > 0 else { return }
        lastProbe = .now
        do {
            let response = try await call("GET", "/system_stats", timeout: .seconds(3))
            guard response.status == 200 else { throw ComfyError.badResponse(url, "GET /system_stats returned HTTP \(response.status)") }
            probeFailures = 0
        } catch {
            probeFailures += 1
            lastError = "\(error)"
            if probeFailures == 2 { logger.warning("ComfyUI probe failing", metadata: ["error": "\(error)"]) }
        }
    }

    /// Prompts in flight and no word about them for `stallTimeout`: move them elsewhere.
    func checkStall(now: ContinuousClock.Instant) {
        if let until = stalledUntil, now >= until { stalledUntil = nil }
        guard !slots.isEmpty, let busySince, now - max(busySince, lastProgress) > timing.stallTimeout else { return }
        stalledUntil = now + timing.stallTimeout
        lastError = "no progress on its prompts for \(timing.stallTimeout.components.seconds) s"
        logger.warning("ComfyUI stalled; moving its prompts", metadata: ["comfy.in_flight": "\(slots.count)"])
        failAll(with: ComfyError.unavailable(url, "stalled: no progress for \(timing.stallTimeout.components.seconds) s"), cancelOnServer: true)
    }

    var isStalled: Bool { stalledUntil != nil }

    /// Tells the pool when the health changed.
    func publishHealth() {
        let now = health
        guard now != publishedHealth else { return }
        publishedHealth = now
        healthContinuation.yield(now)
    }

    /// After a drop: if the socket is still down after `failoverAfter`, fail the prompts over.
    func scheduleFailover() {
        Task {
            try? await Task.sleep(for: timing.failoverAfter)
            guard !isConnected, !slots.isEmpty else { return }
            logger.warning("ComfyUI still unreachable; moving its prompts", metadata: ["comfy.in_flight": "\(slots.count)"])
            failAll(with: ComfyError.unavailable(url, lastError ?? "WebSocket lost"), cancelOnServer: false)
        }
    }
}
