import Foundation
import NIOPosix
import ServiceLifecycle
import Synchronization

/// An async HTTP/1.1 client over libcurl's blocking easy interface.
///
/// `curl_easy_perform` blocks, so it runs on the client's own `NIOThreadPool`, never on Swift's
/// cooperative pool; callers simply `await` the response. Easy handles are kept between
/// exchanges, so connections to a backend stay alive. As a `Service` the client stops its
/// threads when the service group ends.
public final class CurlHTTPClient: Service, Sendable {
    private let threads: NIOThreadPool
    /// How many exchanges may run at once.
    public let threadCount: Int
    private let maxResponseBytes: Int
    /// Handles not in use; an exchange takes one (or makes one) and gives it back.
    private let idle = Mutex<[CurlEasyHandle]>([])

    /// - Parameters:
    ///   - threads: how many exchanges may run at once; later ones wait their turn.
    ///   - maxResponseBytes: a larger body fails the request instead of exhausting memory.
    public init(threads: Int = 16, maxResponseBytes: Int = 256 << 20) {
        threadCount = max(1, threads)
        self.threads = NIOThreadPool(numberOfThreads: threadCount)
        self.threads.start()
        self.maxResponseBytes = maxResponseBytes
    }

    /// Performs one exchange. Task cancellation aborts it, whether queued or on the wire.
    /// - Parameter whenThreadFree: called once the exchange holds no thread any more, which may
    ///   be after this returns (an exchange given up at its deadline ends on its thread).
    public func execute(_ request: CurlRequest, whenThreadFree: (@Sendable () -> Void)? = nil) async throws -> CurlResponse {
        guard let deadline = request.deadline else { return try await perform(request, whenThreadFree: whenThreadFree) }
        // The caller waits no longer than the deadline, also while every thread is busy: the
        // exchange, cancelled, is then dropped unsent when a thread takes it.
        return try await withAbandonableDeadline(deadline, timeout: { CurlError.outwaited }) {
            try await self.perform(request, whenThreadFree: whenThreadFree)
        }
    }

    private func perform(_ request: CurlRequest, whenThreadFree: (@Sendable () -> Void)?) async throws -> CurlResponse {
        let flag = CurlCancellationFlag()
        // The pool hands back only once the work ran or was dropped unrun.
        defer { whenThreadFree?() }
        return try await withTaskCancellationHandler {
            let result: Result<CurlResponse, CurlError>
            do {
                // The future form: the async one, cancelled while its work runs, keeps the work's
                // id for good (swift-nio), one per exchange given up. Cancelling is `flag`'s job:
                // a queued exchange then returns unsent, a running one stops at curl's next tick.
                result = try await threads.runIfActive(eventLoop: MultiThreadedEventLoopGroup.singleton.any()) { [self] in
                    guard !flag.isSet else { return .failure(CurlError(kind: .cancelled, message: "request cancelled")) }
                    if let sendBy = request.sendBy, ContinuousClock.now > sendBy {
                        return .failure(CurlError(kind: .tooLate, message: "not sent: the time it could be sent in had passed"))
                    }
                    var request = request
                    if let deadline = request.deadline {
                        let left = deadline - .now
                        guard left > .milliseconds(1) else { return .failure(CurlError.outwaited) }
                        request.timeout = min(request.timeout, left)
                    }
                    let handle = idle.withLock { $0.popLast() } ?? CurlEasyHandle(maxResponseBytes: maxResponseBytes)
                    defer { idle.withLock { $0.append(handle) } }
                    return handle.perform(request, isCancelled: { flag.isSet })
                }.get()
            } catch {
                throw CurlError(kind: .other, message: "the HTTP client is shut down")
            }
            return try result.get()
        } onCancel: {
            flag.set()
        }
    }

    /// Waits for graceful shutdown, then stops the threads once their exchanges are done.
    public func run() async throws {
        try? await gracefulShutdown()
        try await shutdown()
    }

    /// Stops the threads once their exchanges are done.
    public func shutdown() async throws {
        try await threads.shutdownGracefully()
    }
}

/// A one-way flag shared between a task's cancellation handler and a curl thread.
final class CurlCancellationFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
