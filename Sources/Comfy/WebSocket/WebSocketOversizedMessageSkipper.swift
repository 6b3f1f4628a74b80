import NIOCore

/// Drops a whole-message frame (text or binary, unfragmented, as ComfyUI sends every message)
/// larger than `limit` as its bytes arrive, and passes a small text message in its place:
/// `{"type": "<placeholderType>", "data": {"bytes": N, "binary": true}}`.
///
/// Sits before NIO's frame decoder, which would close the whole connection on such a frame
/// (and hold it in memory first). One socket carries every prompt on a backend, and a workflow
/// can make ComfyUI send a message of any size (a `PreviewAny` of a long text, a huge image
/// from `SaveImageWebsocket`): its prompt fails, the others' events go on. Any other frame
/// passes unchanged, oversized control or continuation frames too, for the decoder to refuse.
final class WebSocketOversizedMessageSkipper: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum State {
        /// At a frame's header; `pendingHeader` holds what arrived of it in earlier reads.
        case header
        /// This many bytes of a frame's payload pass before the next header.
        case passing(Int)
        /// This many bytes of an oversized frame's payload are dropped.
        case skipping(Int)
    }

    private let limit: Int
    /// The placeholder's type: chosen per connection by its owner, so that no node's own
    /// message can pass for one.
    private let placeholderType: String
    private var state = State.header
    /// A header split across reads, as far as it has arrived (2 to 14 bytes in all).
    private var pendingHeader: [UInt8] = []

    init(limit: Int, placeholderType: String) {
        self.limit = limit
        self.placeholderType = placeholderType
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        while bytes.readableBytes > 0 {
            switch state {
            case .passing(let remaining):
                let part = bytes.readSlice(length: min(remaining, bytes.readableBytes))!
                context.fireChannelRead(wrapInboundOut(part))
                state = remaining == part.readableBytes ? .header : .passing(remaining - part.readableBytes)
            case .skipping(let remaining):
                let dropped = min(remaining, bytes.readableBytes)
                bytes.moveReaderIndex(forwardBy: dropped)
                state = remaining == dropped ? .header : .skipping(remaining - dropped)
            case .header where pendingHeader.isEmpty:
                // The usual case: the whole header in this read. It passes together with the
                // payload that follows, one slice, as the decoder would have had it.
                guard let (frame, headerLength) = Self.parse(bytes.readableBytesView) else {
                    pendingHeader = Array(bytes.readableBytesView)
                    bytes.moveReaderIndex(to: bytes.writerIndex)
                    continue
                }
                if frame.isWholeMessage, frame.payloadLength > limit {
                    bytes.moveReaderIndex(forwardBy: headerLength)
                    skip(frame, context: context)
                } else {
                    let part = bytes.readSlice(length: min(headerLength + frame.payloadLength, bytes.readableBytes))!
                    context.fireChannelRead(wrapInboundOut(part))
                    let left = headerLength + frame.payloadLength - part.readableBytes
                    state = left == 0 ? .header : .passing(left)
                }
            case .header:
                pendingHeader.append(bytes.readInteger(as: UInt8.self)!)
                guard let (frame, _) = Self.parse(pendingHeader) else { continue }
                if frame.isWholeMessage, frame.payloadLength > limit {
                    skip(frame, context: context)
                } else {
                    context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(bytes: pendingHeader)))
                    state = frame.payloadLength == 0 ? .header : .passing(frame.payloadLength)
                }
                pendingHeader = []
            }
        }
    }

    private func skip(_ frame: FrameHeader, context: ChannelHandlerContext) {
        context.fireChannelRead(wrapInboundOut(placeholder(bytes: frame.payloadLength, binary: frame.isBinary, allocator: context.channel.allocator)))
        state = frame.payloadLength == 0 ? .header : .skipping(frame.payloadLength)
    }

    struct FrameHeader: Equatable {
        var isWholeMessage: Bool
        var isBinary: Bool
        var payloadLength: Int
    }

    /// The frame whose header `bytes` begin with, and the header's length; `nil` while bytes of
    /// it are missing (RFC 6455 §5.2).
    static func parse<Bytes: Collection>(_ bytes: Bytes) -> (FrameHeader, Int)? where Bytes.Element == UInt8 {
        var byte = bytes.makeIterator()
        guard let first = byte.next(), let second = byte.next() else { return nil }
        let code = Int(second & 0x7F)
        let lengthBytes = code == 127 ? 8 : code == 126 ? 2 : 0
        let headerLength = 2 + lengthBytes + (second & 0x80 != 0 ? 4 : 0)
        guard bytes.count >= headerLength else { return nil }
        var wide = UInt64(code)
        if lengthBytes > 0 {
            wide = 0
            for _ in 0..<lengthBytes { wide = wide << 8 | UInt64(byte.next()!) }
        }
        // A length past Int's range cannot be skipped: it passes, and the decoder refuses it.
        guard wide <= UInt64(Int.max) else { return (FrameHeader(isWholeMessage: false, isBinary: false, payloadLength: 0), headerLength) }
        // 0x1 text, 0x2 binary: a whole message when FIN is set.
        let opcode = first & 0x0F
        let frame = FrameHeader(isWholeMessage: first & 0x80 != 0 && (opcode == 0x1 || opcode == 0x2), isBinary: opcode == 0x2, payloadLength: Int(wide))
        return (frame, headerLength)
    }

    /// An unmasked text frame saying what was dropped.
    private func placeholder(bytes: Int, binary: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        let text = #"{"type": "\#(placeholderType)", "data": {"bytes": \#(bytes), "binary": \#(binary)}}"#
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
