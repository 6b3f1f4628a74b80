import NIOCore
import NIOWebSocket

/// An open WebSocket, client or server side: whole messages in, whole messages out.
///
/// Pings are answered here; a close frame ends `receive()`.
public struct WebSocketSession: Sendable {
    let inbound: NIOAsyncChannelInboundStream<WebSocketFrame>
    let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    /// RFC 6455: frames from a client are masked, frames from a server are not.
    let masksFrames: Bool

    public init(inbound: NIOAsyncChannelInboundStream<WebSocketFrame>, outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>, masksFrames: Bool) {
        self.inbound = inbound
        self.outbound = outbound
        self.masksFrames = masksFrames
    }

    /// The stream of messages; it finishes when the peer closes.
    public var messages: Messages { Messages(session: self) }

    public func send(_ message: WebSocketMessage) async throws {
        switch message {
        case .text(let text):
            try await write(opcode: .text, data: ByteBuffer(string: text))
        case .binary(let bytes):
            try await write(opcode: .binary, data: ByteBuffer(bytes: bytes))
        }
    }

    public func sendPing() async throws {
        try await write(opcode: .ping, data: ByteBuffer())
    }

    /// Sends a close frame; the peer's answer then ends `messages`.
    public func close(code: WebSocketErrorCode = .normalClosure) async throws {
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        try await write(opcode: .connectionClose, data: data)
    }

    func write(opcode: WebSocketOpcode, data: ByteBuffer) async throws {
        try await outbound.write(WebSocketFrame(fin: true, opcode: opcode, maskKey: masksFrames ? .random() : nil, data: data))
    }

    /// Whole messages, in order.
    public struct Messages: AsyncSequence, Sendable {
        public typealias Element = WebSocketMessage
        let session: WebSocketSession

        public func makeAsyncIterator() -> Iterator {
            Iterator(session: session, frames: session.inbound.makeAsyncIterator())
        }

        public struct Iterator: AsyncIteratorProtocol {
            let session: WebSocketSession
            var frames: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator
            var closed = false

            public mutating func next() async throws -> WebSocketMessage? {
                while !closed, let frame = try await frames.next() {
                    let data = frame.unmaskedData
                    switch frame.opcode {
                    case .text:
                        return .text(String(buffer: data))
                    case .binary:
                        return .binary(Array(buffer: data))
                    case .ping:
                        try? await session.write(opcode: .pong, data: data)
                    case .connectionClose:
                        closed = true
                        try? await session.write(opcode: .connectionClose, data: data)
                    default:
                        continue
                    }
                }
                return nil
            }
        }
    }
}
