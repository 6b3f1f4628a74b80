import Synchronization

/// A session's open WebSockets. Messages are delivered synchronously, from whatever context
/// produces them, so progress and results reach every socket in the order they happened.
final class SessionBroadcaster: Sendable {
    /// Previews a socket may have waiting before newer ones are skipped for it. A preview is
    /// an image of tens of KiB; without this a painter that asked for previews and stopped
    /// reading held up to the whole buffer of them.
    static let maxWaitingPreviews = 2

    private struct Subscriber {
        var continuation: AsyncStream<SessionMessage>.Continuation
        var waitingPreviews: WaitingPreviews
        var wantsPreviews: Bool
    }

    private let subscribers = Mutex<[UInt64: Subscriber]>([:])
    /// One count for all sessions: a socket of a dropped session that unsubscribes late must not
    /// remove a subscriber of a new session under the same id.
    private static let nextToken = Atomic<UInt64>(1)

    var count: Int { subscribers.withLock { $0.count } }

    /// A new subscription; the messages end when `remove` is called.
    func add() -> (token: UInt64, messages: SessionMessages) {
        // A slow socket keeps the newest messages, not an unbounded backlog.
        let (stream, continuation) = AsyncStream.makeStream(of: SessionMessage.self, bufferingPolicy: .bufferingNewest(64))
        let waitingPreviews = WaitingPreviews()
        let token = Self.nextToken.wrappingAdd(1, ordering: .relaxed).oldValue
        subscribers.withLock {
            $0[token] = Subscriber(continuation: continuation, waitingPreviews: waitingPreviews, wantsPreviews: false)
        }
        return (token, SessionMessages(stream: stream, waitingPreviews: waitingPreviews))
    }

    /// Ends the subscription; returns whether it was one of this session's.
    @discardableResult
    func remove(_ token: UInt64) -> Bool {
        guard let removed = subscribers.withLock({ $0.removeValue(forKey: token) }) else { return false }
        removed.continuation.finish()
        return true
    }

    func setPreviews(_ token: UInt64, enabled: Bool) {
        subscribers.withLock { $0[token]?.wantsPreviews = enabled }
    }

    func send(_ message: SessionMessage) {
        subscribers.withLock { subscribers in
            for subscriber in subscribers.values {
                if message.isPreview {
                    // A socket that is behind skips previews until it has read what it has.
                    guard subscriber.wantsPreviews, subscriber.waitingPreviews.reserve() else { continue }
                }
                // The buffer's oldest message made room: a preview there is one fewer waiting.
                if case .dropped(let oldest) = subscriber.continuation.yield(message), oldest.isPreview {
                    subscriber.waitingPreviews.release()
                }
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

/// How many previews a subscription holds that its socket has not taken yet.
final class WaitingPreviews: Sendable {
    private let count = Atomic<Int>(0)

    /// Counts one more, unless `SessionBroadcaster.maxWaitingPreviews` are waiting.
    func reserve() -> Bool {
        var current = count.load(ordering: .relaxed)
        while current < SessionBroadcaster.maxWaitingPreviews {
            let (exchanged, original) = count.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func release() {
        count.subtract(1, ordering: .relaxed)
    }
}

/// One socket's messages, in order; a preview stops counting as waiting once taken.
public struct SessionMessages: AsyncSequence, Sendable {
    public typealias Element = SessionMessage
    let stream: AsyncStream<SessionMessage>
    let waitingPreviews: WaitingPreviews

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<SessionMessage>.AsyncIterator
        let waitingPreviews: WaitingPreviews

        public mutating func next() async -> SessionMessage? {
            let message = await base.next()
            if message?.isPreview == true { waitingPreviews.release() }
            return message
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async -> SessionMessage? {
            let message = await base.next(isolation: actor)
            if message?.isPreview == true { waitingPreviews.release() }
            return message
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), waitingPreviews: waitingPreviews)
    }
}
