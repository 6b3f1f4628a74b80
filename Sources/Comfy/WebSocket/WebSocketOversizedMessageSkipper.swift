import NIOCore

/// Drops a whole-message frame (text or binary, unfragmented, as ComfyUI sends every message)
/// larger than `limit` as its bytes arrive, and passes a small text message in its place:
/// `{"type": "gateway_message_too_large", "data": {"bytes": N, "binary": true}}`.
///
/// Sits before NIO's frame decoder, which would close the whole connection on such a frame
/// (and hold it in memory first). One socket carries every prompt on a backend, and a workflow
/// can make ComfyUI send a message of any size (a `PreviewAny` of a long text, a huge image
/// from `SaveImageWebsocket`): its prompt fails, the others' events go on. Any other frame
/// passes unchanged, oversized control or continuation frames too, for the decoder to refuse.
final class WebSocketOversizedMessageSkipper: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The message type put in place of a dropped frame.
    static let messageType = "gateway_message_too_large"

    private enum State {
        /// The next frame's header, as far as it has arrived.
        case header(ByteBuffer)
        /// This many bytes of a frame's payload pass before the next header.
        case passing(Int)
        /// This many bytes of an oversized frame's payload are dropped.
        case skipping(Int)
    }

    private let limit: Int
    private var state = State.header(ByteBuffer())

    init(limit: Int) {
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        while bytes.readableBytes > 0 {
            switch state {
            case .passing(let remaining):
                let part = bytes.readSlice(length: min(remaining, bytes.readableBytes))!
                context.fireChannelRead(wrapInboundOut(part))
                state = remaining == part.readableBytes ? .header(ByteBuffer()) : .passing(remaining - part.readableBytes)
            case .skipping(let remaining):
                let dropped = min(remaining, bytes.readableBytes)
                bytes.moveReaderIndex(forwardBy: dropped)
                state = remaining == dropped ? .header(ByteBuffer()) : .skipping(remaining - dropped)
            case .header(var header):
                // One byte at a time until the header is whole: it is 2 to 14 bytes.
                header.writeInteger(bytes.readInteger(as: UInt8.self)!)
                guard let frame = Self.parse(header) else {
                    state = .header(header)
                    continue
                }
                if frame.isWholeMessage, frame.payloadLength > limit {
                    context.fireChannelRead(wrapInboundOut(Self.placeholder(bytes: frame.payloadLength, binary: frame.isBinary, allocator: context.channel.allocator)))
                    state = .skipping(frame.payloadLength)
                } else {
                    context.fireChannelRead(wrapInboundOut(header))
                    state = frame.payloadLength == 0 ? .header(ByteBuffer()) : .passing(frame.payloadLength)
                }
            }
        }
    }

    struct FrameHeader: Equatable {
        var isWholeMessage: Bool
        var isBinary: Bool
        var payloadLength: Int
    }

    /// The frame a complete header announces; `nil` while bytes of it are missing (RFC 6455 §5.2).
    static func parse(_ header: ByteBuffer) -> FrameHeader? {
        let bytes = Array(header.readableBytesView)
        guard bytes.count >= 2 else { return nil }
        let fin = bytes[0] & 0x80 != 0
        let opcode = bytes[0] & 0x0F
        let masked = bytes[1] & 0x80 != 0
        let code = Int(bytes[1] & 0x7F)
        let lengthBytes = code == 127 ? 8 : code == 126 ? 2 : 0
        guard bytes.count == 2 + lengthBytes + (masked ? 4 : 0) else { return nil }
        var length = code
        if lengthBytes > 0 {
            // A length past Int's range cannot be skipped: the decoder refuses it.
            let wide = bytes[2..<(2 + lengthBytes)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard wide <= UInt64(Int.max) else { return FrameHeader(isWholeMessage: false, isBinary: false, payloadLength: 0) }
            length = Int(wide)
        }
        // 0x1 text, 0x2 binary: a whole message when `fin` is set.
        return FrameHeader(isWholeMessage: fin && (opcode == 0x1 || opcode == 0x2), isBinary: opcode == 0x2, payloadLength: length)
    }

    /// An unmasked text frame saying what was dropped.
    static func placeholder(bytes: Int, binary: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        let text = #"{"type": "\#(messageType)", "data": {"bytes": \#(bytes), "binary": \#(binary)}}"#
        var frame = allocator.buffer(capacity: text.utf8.count + 4)
        frame.writeInteger(UInt8(0x81))
        if text.utf8.count < 126 {
            frame.writeInteger(UInt8(text.utf8.count))
        } else {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(text.utf8.count))
        }
        frame.writeString(text)
        return frame
    }
}
