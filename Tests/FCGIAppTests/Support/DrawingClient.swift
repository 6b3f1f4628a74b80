import Comfy
import Foundation

/// A painter's WebSocket to `/api/ws/{id}` through nginx, collecting the server's messages.
actor DrawingClient {
    private var received: [JSONValue] = []
    private var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    private var outbox: AsyncStream<String>.Continuation?
    private var task: Task<Void, Error>?

    /// Every message so far, in order.
    var messages: [JSONValue] { received }

    /// Connects; returns once the upgrade succeeded.
    static func connect(port: Int, sessionID: String) async throws -> DrawingClient {
        try await connect(port: port, path: "/api/ws/\(sessionID)")
    }

    /// Connects to a path as `/api/sketch` answered it (`websocket_url`, with its token).
    static func connect(port: Int, path: String) async throws -> DrawingClient {
        let client = DrawingClient()
        try await client.open(port: port, path: path)
        return client
    }

    private func open(port: Int, path: String) async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        outbox = continuation
        let opened = AsyncStream.makeStream(of: Bool.self)
        task = Task {
            defer { opened.continuation.finish() }
            try await WebSocketClient.connect(host: "127.0.0.1", port: port, path: path) { session in
                opened.continuation.yield(true)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await text in stream { try await session.send(.text(text)) }
                        try await session.close()
                    }
                    group.addTask {
                        for try await message in session.messages {
                            if case .text(let text) = message, let json = try? JSONValue.parse(Array(text.utf8)) {
                                await self.record(json)
                            }
                        }
                    }
                    _ = try await group.next()
                    group.cancelAll()
                }
            }
        }
        var iterator = opened.stream.makeAsyncIterator()
        guard await iterator.next() == true else {
            _ = try await task?.value
            throw TestFailure("WebSocket to \(path) did not open")
        }
    }

    private func record(_ message: JSONValue) {
        received.append(message)
        waiters.removeAll { waiter in
            guard received.count >= waiter.count else { return false }
            waiter.continuation.resume()
            return true
        }
    }

    func send(_ message: JSONValue) {
        outbox?.yield(String(decoding: message.encoded(), as: UTF8.self))
    }

    func sendRaw(_ text: String) {
        outbox?.yield(text)
    }

    func sendSketch(_ png: [UInt8], style: String? = nil, prompt: String? = nil) {
        var message: [String: JSONValue] = ["type": "sketch_update", "sketch_data": .string("data:image/png;base64," + Data(png).base64EncodedString())]
        if let style { message["style"] = .string(style) }
        if let prompt { message["prompt"] = .string(prompt) }
        send(.object(message))
    }

    /// Waits until a message matches, at most `timeout`; returns it.
    func next(where matches: (JSONValue) -> Bool, after start: Int = 0, timeout: Duration = .seconds(15)) async throws -> JSONValue {
        let deadline = ContinuousClock.now + timeout
        var seen = start
        while ContinuousClock.now < deadline {
            while seen < received.count {
                if matches(received[seen]) { return received[seen] }
                seen += 1
            }
            let wanted = seen + 1
            let timer = Task { [weak self] in
                try? await Task.sleep(until: deadline)
                await self?.wakeAll()
            }
            await withCheckedContinuation { waiters.append((wanted, $0)) }
            timer.cancel()
        }
        throw TestFailure("no matching message within \(timeout); got \(received)")
    }

    /// Waits for the next message whose `status` is one of these.
    func next(status: String..., after start: Int = 0, timeout: Duration = .seconds(15)) async throws -> JSONValue {
        try await next(where: { status.contains($0["status"]?.stringValue ?? "") }, after: start, timeout: timeout)
    }

    private func wakeAll() {
        for waiter in waiters { waiter.continuation.resume() }
        waiters.removeAll()
    }

    func close() async {
        outbox?.finish()
        _ = try? await task?.value
    }
}
