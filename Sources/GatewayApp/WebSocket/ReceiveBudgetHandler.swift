import Metrics
import NIOCore
import NIOWebSocket

/// Charges the bytes of each data message to the socket's `ReceiveBudget.Account` as they
/// arrive; the socket's reader gives them back once it has handled the whole message. It reads
/// frame headers itself, since the frame decoder after it keeps a partial frame out of sight.
/// Bytes that do not fit close the socket with 1013 (try again later), as does a message the
/// budget gives up for another address's, and a message not whole within `messageTimeout` of
/// its first byte closes it with 1008: held open by a trickle, a share of the budget would stay
/// taken for as long as the socket lives. Control frames are small (at
/// most 125 bytes, which the decoder enforces) and not charged.
final class ReceiveBudgetHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    private let account: ReceiveBudget.Account
    private let messageTimeout: TimeAmount
    /// The header being read (2 to 14 bytes).
    private var header: [UInt8] = []
    /// Payload bytes of the current frame not read yet; `nil` while a header is read.
    private var remaining: UInt64?
    private var frameIsControl = false
    private var frameIsFinal = false
    /// Bytes of the data message arriving so far, headers included.
    private var messageSoFar = 0
    /// Ends the socket if the message arriving is not whole in time.
    private var deadline: Scheduled<Void>?
    private var refused = false
    private var removed = false

    init(account: ReceiveBudget.Account, messageTimeout: TimeAmount) {
        self.account = account
        self.messageTimeout = messageTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        var index = buffer.readerIndex
        let end = buffer.writerIndex
        while index < end {
            if let left = remaining {
                let count = Int(min(left, UInt64(end - index)))
                guard frameIsControl || charge(count, context: context) else { return refuse(context, .unknown(1013), Self.busy) }
                index += count
                remaining = left - UInt64(count)
            } else {
                header.append(buffer.getInteger(at: index, as: UInt8.self)!)
                index += 1
                guard let length = Self.payloadLength(header) else { continue }
                frameIsControl = header[0] & 0x08 != 0
                frameIsFinal = header[0] & 0x80 != 0
                guard frameIsControl || charge(header.count, context: context) else { return refuse(context, .unknown(1013), Self.busy) }
                header.removeAll(keepingCapacity: true)
                remaining = length
            }
            if remaining == 0 {
                remaining = nil
                if frameIsFinal && !frameIsControl {
                    account.messageArrived()
                    messageSoFar = 0
                    deadline?.cancel()
                    deadline = nil
                }
            }
        }
        context.fireChannelRead(data)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        account.whenEvicted {
            handler.eventLoop.execute {
                guard !handler.value.removed else { return }
                handler.value.refuse(bound.value, .unknown(1013), Self.busy, reason: "evicted")
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
        deadline?.cancel()
        account.whenEvicted(nil)
        account.stopArriving()
    }

    /// A frame's payload length once `header` is complete (RFC 6455 §5.2), else `nil`.
    static func payloadLength(_ header: [UInt8]) -> UInt64? {
        guard header.count >= 2 else { return nil }
        let short = header[1] & 0x7F
        let extended = short == 126 ? 2 : short == 127 ? 8 : 0
        let masked = header[1] & 0x80 != 0
        guard header.count == 2 + extended + (masked ? 4 : 0) else { return nil }
        guard extended > 0 else { return UInt64(short) }
        return header[2..<(2 + extended)].reduce(0) { $0 << 8 | UInt64($1) }
    }

    private static let busy = "the gateway is receiving too much at once; send again shortly"

    private func charge(_ count: Int, context: ChannelHandlerContext) -> Bool {
        if messageSoFar == 0 {
            let seconds = messageTimeout.nanoseconds / 1_000_000_000
            deadline = context.eventLoop.assumeIsolated().scheduleTask(in: messageTimeout) { [self] in
                refuse(context, .policyViolation, "a message must arrive whole within \(seconds) s of its first byte")
            }
        }
        messageSoFar += count
        return account.charge(count, messageSoFar: messageSoFar)
    }

    private func refuse(_ context: ChannelHandlerContext, _ code: WebSocketErrorCode, _ message: String, reason: String? = nil) {
        guard !refused else { return }
        refused = true
        deadline?.cancel()
        account.stopArriving()
        let counted = reason ?? (code == .policyViolation ? "slow" : "full")
        Counter(label: "comfy_gateway_websocket_budget_refusals_total", dimensions: [("reason", counted)]).increment()
        var payload = context.channel.allocator.buffer(capacity: 80)
        payload.write(webSocketErrorCode: code)
        payload.writeString(message)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)), promise: nil)
        context.close(promise: nil)
    }
}
