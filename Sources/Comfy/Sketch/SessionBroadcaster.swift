import Synchronization

/// A session's open WebSockets. Messages are delivered synchronously, from whatever context
/// produces them, so progress and results reach every socket in the order they happened.
final class SessionBroadcaster: Sendable {
    private struct Subscriber {
        var continuation: AsyncStream<SessionMessage>.Continuation
        var wantsPreviews: Bool
    }

    private let subscribers = Mutex<[UInt64: Subscriber]>([:])
    private let nextToken = Atomic<UInt64>(1)

    var count: Int { subscribers.withLock { $0.count } }

    /// A new subscription; the stream ends when `remove` is called.
    func add() -> (token: UInt64, messages: AsyncStream<SessionMessage>) {
        // A slow socket keeps the newest messages, not an unbounded backlog.
        let (stream, continuation) = AsyncStream.makeStream(of: SessionMessage.self, bufferingPolicy: .bufferingNewest(64))
        let token = nextToken.wrappingAdd(1, ordering: .relaxed).oldValue
        subscribers.withLock { $0[token] = Subscriber(continuation: continuation, wantsPreviews: false) }
        return (token, stream)
    }

    func remove(_ token: UInt64) {
        subscribers.withLock { $0.removeValue(forKey: token) }?.continuation.finish()
    }

    func setPreviews(_ token: UInt64, enabled: Bool) {
        subscribers.withLock { $0[token]?.wantsPreviews = enabled }
    }

    func send(_ message: SessionMessage) {
        subscribers.withLock { subscribers in
            for subscriber in subscribers.values where !message.isPreview || subscriber.wantsPreviews {
                subscriber.continuation.yield(message)
            }
        }
    }

    func finishAll() {
        subscribers.withLock { subscribers in
            for subscriber in subscribers.values { subscriber.continuation.finish() }
            subscribers.removeAll()
        }
    }
}
