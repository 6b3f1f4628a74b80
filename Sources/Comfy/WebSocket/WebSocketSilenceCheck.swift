import NIOCore
import NIOWebSocket

/// Pings a peer that has sent nothing for `interval`, and closes the connection when it stays
/// silent for another `interval`. ComfyUI sends no heartbeat of its own: a GPU server that lost
/// power, or a NAT that forgot the flow, leaves a socket that looks open and hears nothing
/// ever again, and the gateway would neither fail its prompts over nor open a new one.
///
/// It sits before the frame decoder and counts bytes, not frames: a 60 MB image arriving
/// slowly is one frame, whose pong can only come after it, and it is no silence.
/// A timer on the socket's event loop.
final class WebSocketSilenceCheck: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let interval: TimeAmount
    /// Bytes read since the last tick.
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
                // From the pipeline's end, through the frame encoder; a client's frames are masked (RFC 6455 §5.3).
                context.channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .ping, maskKey: .random(), data: ByteBuffer()), promise: nil)
            }
            scheduleTick(context)
        }
    }
}
