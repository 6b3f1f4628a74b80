import NIOCore

/// Whether a drawing socket's peer sent anything since the keep-alive last looked: its ping
/// unanswered a whole interval later means the painter is gone (a phone off the network), which
/// TCP would take many minutes to tell. One per socket, on its event loop.
final class PeerActivity {
    var heard = false
}

/// Marks `PeerActivity` for every read, before the frame decoder: a large sketch arriving slowly
/// completes no frame for a while, and is no silence.
final class PeerActivityMark: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let activity: PeerActivity

    init(_ activity: PeerActivity) {
        self.activity = activity
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        activity.heard = true
        context.fireChannelRead(data)
    }
}
