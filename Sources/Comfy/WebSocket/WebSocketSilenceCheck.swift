import NIOCore
import NIOWebSocket

/// Pings a peer that has been silent for `interval`, and closes the connection when it stays
/// silent for another `interval`. ComfyUI sends no heartbeat of its own: a GPU server that lost
/// power, or a NAT that forgot the flow, leaves a socket that looks open and hears nothing
/// ever again, and the gateway would neither fail its prompts over nor open a new one.
///
/// A timer on the socket's event loop; any frame read (a pong, an event, an image) counts.
final class WebSocketSilenceCheck: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let interval: TimeAmount
    /// Frames read since the last tick.
    private var heard = false
    /// A ping went out at the last tick, and nothing was read since.
    private var pinged = false
    private var tick: Scheduled<Void>?

    init(interval: TimeAmount) {
        self.interval = interval
    }

    func handlerAdded(context: ChannelHandlerContext) {
        scheduleTick(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        tick?.cancel()
        tick = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heard = true
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        tick?.cancel()
        tick = nil
        context.fireChannelInactive()
    }

    private func scheduleTick(_ context: ChannelHandlerContext) {
        tick = context.eventLoop.assumeIsolated().scheduleTask(in: interval) { [self] in
            if heard {
                heard = false
                pinged = false
            } else if pinged {
                // Silent through a ping and another interval: the peer is gone.
                tick = nil
                context.close(promise: nil)
                return
            } else {
                pinged = true
                // A client's frames are masked (RFC 6455 §5.3).
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, maskKey: .random(), data: ByteBuffer())), promise: nil)
            }
            scheduleTick(context)
        }
    }
}
