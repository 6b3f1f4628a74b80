import Foundation
import Synchronization

/// An async HTTP/1.1 client over libcurl's blocking easy interface.
///
/// `curl_easy_perform` blocks, so it runs on the client's own worker threads, never on Swift's
/// cooperative pool; callers simply `await` the response.
public final class CurlHTTPClient: Sendable {
    private let pool: CurlWorkerPool

    /// - Parameters:
    ///   - threads: how many exchanges may run at once; later ones wait their turn.
    ///   - maxResponseBytes: a larger body fails the request instead of exhausting memory.
    public init(threads: Int = 16, maxResponseBytes: Int = 256 << 20) {
        pool = CurlWorkerPool(threads: threads, maxResponseBytes: maxResponseBytes)
    }

    /// Performs one exchange. Task cancellation aborts it, whether queued or on the wire.
    public func execute(_ request: HTTPClientRequest) async throws -> HTTPClientResponse {
        let flag = CancellationFlag()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPClientResponse, Error>) in
                pool.submit { handle in
                    guard !flag.isSet else {
                        continuation.resume(throwing: HTTPClientError(kind: .cancelled, message: "request cancelled"))
                        return
                    }
                    continuation.resume(with: handle.perform(request, isCancelled: { flag.isSet }).mapError { $0 })
                }
            }
        } onCancel: {
            flag.set()
        }
    }

    /// Stops the worker threads once queued exchanges are done.
    public func shutdown() {
        pool.shutdown()
    }
}

/// A one-way flag shared between a task's cancellation handler and a curl worker.
final class CancellationFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
