import Logging

/// How uploads to an object store are retried: a few attempts with a short, doubling pause.
public struct UploadRetry: Sendable {
    /// Attempts in all, the first included.
    public var attempts: Int
    /// The pause after the first failed attempt; it doubles after each further one.
    public var backoff: Duration

    public init(attempts: Int = 3, backoff: Duration = .milliseconds(250)) {
        self.attempts = max(1, attempts)
        self.backoff = backoff
    }

    /// Runs `attempt` (given its 1-based number) until it returns `nil` (success), fails in a way
    /// not worth retrying, or the attempts run out; then returns the last failure and its number.
    func run(_ attempt: (Int) async -> UploadFailure?) async -> (failure: UploadFailure, attempts: Int)? {
        var pause = backoff
        for number in 1...attempts {
            guard let failure = await attempt(number) else { return nil }
            guard failure.retryable, number < attempts else { return (failure, number) }
            do {
                try await Task.sleep(for: pause)
            } catch {
                return (UploadFailure(message: "cancelled while retrying after: \(failure.message)", retryable: false, summary: "cancelled"), number)
            }
            pause *= 2
        }
        return nil
    }

    /// Uploads a copy already kept locally, retrying, logging each failure; when it keeps
    /// failing, throws a `StorageError` naming the store and where the local copy is.
    func upload(
        _ key: String, kept: StoredImage, store: String, bucket: String, local: LocalImageStore, logger: Logger,
        _ attempt: () async -> UploadFailure?
    ) async throws {
        let outcome = await run { number in
            let failure = await attempt()
            if let failure {
                logger.warning("object upload failed", metadata: [
                    "storage.store": "\(store)", "storage.bucket": "\(bucket)", "storage.key": "\(key)",
                    "storage.attempt": "\(number)", "error": "\(failure)",
                ])
            }
            return failure
        }
        guard let (failure, attempts) = outcome else { return }
        throw StorageError(
            store: store,
            // The bucket, the key and the store's words are in the log lines above, not for callers.
            message: "uploading the image failed after \(attempts) attempt\(attempts == 1 ? "" : "s") (\(failure.summary)); the image is kept in local storage, served at \(kept.url)",
            localURL: kept.url
        )
    }

    /// Sends one upload request; `nil` when the store took it.
    static func send(_ request: CurlRequest, with http: CurlHTTPClient) async -> UploadFailure? {
        do {
            let response = try await http.execute(request)
            return (200..<300).contains(response.status) ? nil : UploadFailure(status: response.status, body: response.body)
        } catch let error as CurlError {
            return UploadFailure(error)
        } catch {
            return UploadFailure(message: "\(error)", retryable: false, summary: "failed")
        }
    }
}
