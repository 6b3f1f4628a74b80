import NIOCore
import NIOWebSocket

/// Pings a peer that has sent nothing for `interval`, and closes the connection when it stays
/// silent for another `interval`. ComfyUI sends no heartbeat of its own: a GPU server that lost
/// power, or a NAT that forgot the flow, leaves a socket that looks open and hears nothing
/// ever again, and the gateway would neither fail its prompts over nor open a new one.
///
/// It sits before the frame decoder and counts bytes, not frames: a 60 MB image arriving
/// slowly is one frame, whose pong can only come after it, and it is no silence.
/// A timer on the socket's event loop. The drawing sockets use it too: a painter's phone gone
/// off the network answers nothing, and TCP would take many minutes to tell.
public final class WebSocketSilenceCheck: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let interval: TimeAmount
    /// A client's frames are masked (RFC 6455 §5.3), a server's are not.
    private let masksPings: Bool
    /// Bytes read since the last tick.
    private var heard = false
    /// A ping went out at the last tick, and nothing was read since.
    private var pinged = false
    private var tick: Scheduled<Void>?

    public init(interval: TimeAmount, masksPings: Bool = true) {
        self.interval = interval
        self.masksPings = masksPings
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        scheduleTick(context)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        tick?.cancel()
        tick = nil
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heard = true
        context.fireChannelRead(data)
    }

    public func channelInactive(context: ChannelHandlerContext) {
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
                // From the pipeline's end, through the frame encoder.
                context.channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .ping, maskKey: masksPings ? .random() : nil, data: ByteBuffer()), promise: nil)
            }
            scheduleTick(context)
        }
    }
}
