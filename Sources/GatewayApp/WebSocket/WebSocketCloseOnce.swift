import NIOCore
import NIOWebSocket

/// Next to the frame encoder, where every frame of a drawing socket passes on its way out:
/// lets one close frame out and nothing after it (RFC 6455 §5.5.1), whoever writes it (the
/// frame checks, the keep-alive, the reader). A socket the gateway closes before any close
/// frame (its session ended, the gateway stops) hears 1001, going away, not a cut connection
/// (1006), so the painter knows to connect again.
final class WebSocketCloseOnce: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var closeFrameSent = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closeFrameSent else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        if unwrapOutboundIn(data).opcode == .connectionClose { closeFrameSent = true }
        context.write(data, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if !closeFrameSent, mode == .all, context.channel.isActive {
            closeFrameSent = true
            var code = context.channel.allocator.buffer(capacity: 2)
            code.write(webSocketErrorCode: .goingAway)
            // Written now if the socket takes it; a painter that reads nothing is not waited for.
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: code)), promise: nil)
        }
        context.close(mode: mode, promise: promise)
    }
}
