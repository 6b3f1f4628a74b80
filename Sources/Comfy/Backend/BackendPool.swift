import Logging

/// The ComfyUI servers behind the gateway; each job goes to the least-loaded connected one.
public final class BackendPool: Sendable {
    public let backends: [ComfyBackend]

    public init(urls: [ComfyServerURL], http: CurlHTTPClient, logger: Logger) {
        backends = urls.map { ComfyBackend(url: $0, http: http, logger: logger) }
    }

    /// Keeps every backend's WebSocket open until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for backend in backends {
                group.addTask { await backend.run() }
            }
        }
    }

    /// Runs the job on the least-loaded connected backend (waiting briefly for one to connect).
    public func run(_ job: PromptJob) async throws -> GeneratedImage {
        try await pick().run(job)
    }

    func pick() async throws -> ComfyBackend {
        for _ in 0..<2 {
            var best: (backend: ComfyBackend, load: Int)?
            for backend in backends where await backend.isConnected {
                let load = await backend.inFlight
                if best == nil || load < best!.load { best = (backend, load) }
            }
            if let best { return best.backend }
            // None connected yet (start-up, or a reconnect in progress): give them a moment.
            await withTaskGroup(of: Bool.self) { group in
                for backend in backends {
                    group.addTask { await backend.waitUntilConnected(timeout: .seconds(3)) }
                }
                for await connected in group where connected {
                    group.cancelAll()
                    break
                }
            }
        }
        var reasons: [String] = []
        for backend in backends {
            reasons.append("\(backend.url): \(await backend.lastError ?? "not connected")")
        }
        var error = ComfyError(code: .backendUnavailable, message: "no ComfyUI backend is reachable (\(reasons.joined(separator: "; ")))")
        error.backend = backends.map(\.url.description).joined(separator: ",")
        throw error
    }

    /// Each backend's state for `/healthz`.
    public func status() async -> [BackendStatus] {
        var result: [BackendStatus] = []
        for backend in backends {
            result.append(BackendStatus(
                url: backend.url.description,
                isUp: await backend.isConnected,
                inFlight: await backend.inFlight,
                lastError: await backend.lastError
            ))
        }
        return result
    }
}

/// A backend's health as `/healthz` reports it.
public struct BackendStatus: Sendable {
    public var url: String
    public var isUp: Bool
    public var inFlight: Int
    public var lastError: String?
}
