import NIOCore
import NIOWebSocket

/// Checks each frame as it comes off the wire, before fragments are joined, and closes with
/// 1002 (RFC 6455 §7.4.1) on the first that breaks the protocol: a client's frames must be
/// masked and a server's must not; no extension was agreed, so the RSV bits are 0; reserved
/// opcodes are refused; control frames are whole and at most 125 bytes.
public final class WebSocketFrameValidator: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = WebSocketFrame
    public typealias InboundOut = WebSocketFrame
    public typealias OutboundOut = WebSocketFrame

    /// Whether the peer must mask its frames (it is a client).
    private let peerMasks: Bool
    private var failed = false

    public init(peerMasks: Bool) {
        self.peerMasks = peerMasks
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let frame = unwrapInboundIn(data)
        guard let code = Self.violation(in: frame, peerMasks: peerMasks) else {
            context.fireChannelRead(data)
            return
        }
        failed = true
        var payload = context.channel.allocator.buffer(capacity: 2)
        payload.write(webSocketErrorCode: code)
        // A server's frames are not masked; a client's are.
        let close = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: peerMasks ? nil : .random(), data: payload)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(close)).whenComplete { _ in channel.close(promise: nil) }
    }

    static func violation(in frame: WebSocketFrame, peerMasks: Bool) -> WebSocketErrorCode? {
        if (frame.maskKey != nil) != peerMasks { return .protocolError }
        if frame.rsv1 || frame.rsv2 || frame.rsv3 { return .protocolError }
        switch frame.opcode {
        case .connectionClose, .ping, .pong:
            return !frame.fin || frame.length > 125 ? .protocolError : nil
        case .text, .binary, .continuation:
            return nil
        default:
            return .protocolError
        }
    }
}
