import Foundation
import NIOCore

/// The long-lived WebSocket to one ComfyUI, opened again with backoff whenever it drops.
/// Everything it hears leaves through `events`, in order.
///
/// Each (re)connection gets a fresh `clientId`: ComfyUI keeps one socket per id, and an old
/// socket's cleanup would silently orphan a new one with the same id (server.py's `websocket_handler` drops the id's socket when its old connection closes).
public struct ComfyConnection: Sendable {
    /// The largest message read from ComfyUI unless configured (a larger one fails its prompt).
    public static let defaultMaxMessageBytes = 64 << 20

    enum Event: Sendable {
        /// Upgraded: prompts may be submitted under this client id.
        case connected(clientID: String)
        case disconnected(reason: String)
        case message(ComfyEvent)
        case frame(ComfyBinaryFrame)
    }

    let url: ComfyServerURL
    /// Silent this long, ComfyUI is pinged; silent as long again, the socket is opened anew.
    let silenceLimit: Duration
    /// A larger message is dropped as it arrives, and fails the prompt running then.
    let maxMessageBytes: Int
    let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let clientIDPrefix = UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")

    init(url: ComfyServerURL, silenceLimit: Duration, maxMessageBytes: Int = defaultMaxMessageBytes) {
        self.url = url
        self.silenceLimit = silenceLimit
        self.maxMessageBytes = maxMessageBytes
        (events, continuation) = AsyncStream.makeStream()
    }

    /// Keeps the socket open until the task is cancelled; then ends `events`.
    func run() async {
        var backoff = Duration.milliseconds(100)
        var generation = 0
        while !Task.isCancelled {
            generation += 1
            let id = "\(clientIDPrefix)-\(generation)"
            // Unguessable, so that no node's own message passes for the skipper's.
            let oversized = "gateway_message_too_large_\(UUID().uuidString.lowercased())"
            var wasConnected = false
            let reason: String
            do {
                try await WebSocketClient.connect(
                    host: url.host, port: url.port, path: "\(url.basePath)/ws?clientId=\(id)", maxMessageSize: maxMessageBytes,
                    oversizedMessageType: oversized, silenceLimit: TimeAmount(silenceLimit)
                ) { session in
                    // Connected once upgraded: ComfyUI's first `status` frame can arrive in the same read as
                    // the 101 answer and is not guaranteed to reach us, so nothing may wait for it.
                    wasConnected = true
                    continuation.yield(.connected(clientID: id))
                    // Type-4 frames carry prompt and node ids; only honoured as the first client message.
                    try await session.send(.text(#"{"type": "feature_flags", "data": {"supports_preview_metadata": true}}"#))
                    for try await message in session.messages {
                        switch message {
                        case .text(let text):
                            let bytes = Array(text.utf8)
                            // Only what the prompt tracker acts on crosses to the backend's actor.
                            let event = ComfyEvent.leadingType(bytes) == oversized ? Self.messageTooLarge(bytes) : ComfyEvent.decode(bytes)
                            if let event, event.concernsAPrompt { continuation.yield(.message(event)) }
                        case .binary(let bytes):
                            if let frame = ComfyBinaryFrame.decode(bytes) { continuation.yield(.frame(frame)) }
                        }
                    }
                }
                reason = "WebSocket closed by the server"
            } catch {
                reason = "WebSocket: \(error)"
            }
            continuation.yield(.disconnected(reason: reason))
            if wasConnected { backoff = .milliseconds(100) }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
        continuation.finish()
    }

    /// The skipper's note of a message it dropped.
    private static func messageTooLarge(_ note: [UInt8]) -> ComfyEvent {
        let data = (try? JSONValue.parse(note))?["data"]
        return .messageTooLarge(bytes: data?["bytes"]?.intValue ?? 0, binary: data?["binary"]?.boolValue ?? false)
    }
}
