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
                // On the drawing socket, frames that break RFC 6455 never get here: `WebSocketFrameValidator` closed with 1002.
                while !closed, let frame = try await nextFrame() {
                    let data = frame.unmaskedData
                    switch frame.opcode {
                    case .text:
                        guard let text = String(validating: data.readableBytesView, as: UTF8.self) else {
                            try await fail(.dataInconsistentWithMessage)
                            return nil
                        }
                        return .text(text)
                    case .binary:
                        return .binary(Array(buffer: data))
                    case .ping:
                        try? await session.write(opcode: .pong, data: data)
                    case .pong:
                        continue
                    case .connectionClose:
                        closed = true
                        // RFC 6455 §5.5.1, §7.4: echo a valid code; answer an invalid one with 1002, bad UTF-8 with 1007.
                        var payload = data
                        switch WebSocketSession.closeReply(to: &payload) {
                        case .echo(let code):
                            var reply = ByteBuffer()
                            if let code { reply.write(webSocketErrorCode: code) }
                            try? await session.write(opcode: .connectionClose, data: reply)
                        case .fail(let code):
                            try? await session.close(code: code)
                        }
                    default:
                        try await fail(.protocolError)
                        return nil
                    }
                }
                return nil
            }

            /// The next whole frame. Fragments that cannot be joined (the aggregator's errors) close
            /// the socket with the code saying why before the error ends the messages.
            private mutating func nextFrame() async throws -> WebSocketFrame? {
                do {
                    return try await frames.next()
                } catch let error as NIOWebSocketFrameAggregator.Error {
                    switch error {
                    case .accumulatedFrameSizeIsTooLarge, .tooManyFragments: try await fail(.messageTooLarge)
                    default: try await fail(.protocolError)
                    }
                    throw error
                }
            }

            private mutating func fail(_ code: WebSocketErrorCode) async throws {
                closed = true
                try? await session.close(code: code)
            }
        }
    }

    enum CloseReply: Equatable {
        /// Close with this code (none when the peer sent none).
        case echo(WebSocketErrorCode?)
        case fail(WebSocketErrorCode)
    }

    /// How to answer the peer's close frame.
    static func closeReply(to payload: inout ByteBuffer) -> CloseReply {
        guard payload.readableBytes > 0 else { return .echo(nil) }
        guard payload.readableBytes >= 2, let raw = payload.readInteger(as: UInt16.self) else { return .fail(.protocolError) }
        guard isValidCloseCode(raw) else { return .fail(.protocolError) }
        guard String(validating: payload.readableBytesView, as: UTF8.self) != nil else { return .fail(.dataInconsistentWithMessage) }
        return .echo(WebSocketErrorCode(codeNumber: Int(raw)))
    }

    /// RFC 6455 §7.4.1–2 and IANA's registry: codes a peer may send in a close frame.
    static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }
}
