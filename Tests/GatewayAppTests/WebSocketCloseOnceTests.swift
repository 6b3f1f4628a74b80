@testable import GatewayApp
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

/// One close frame per drawing socket, whoever writes it, and 1001 when the gateway closes first.
struct WebSocketCloseOnceTests {
    func socket() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: WebSocketCloseOnce())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        return channel
    }

    func written(_ channel: EmbeddedChannel) throws -> [WebSocketFrame] {
        var frames: [WebSocketFrame] = []
        while let frame = try channel.readOutbound(as: WebSocketFrame.self) { frames.append(frame) }
        return frames
    }

    func close(_ code: WebSocketErrorCode) -> WebSocketFrame {
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        return WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
    }

    @Test func aSocketTheGatewayClosesFirstHearsGoingAway() throws {
        let channel = try socket()
        try channel.writeOutbound(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "hi")))
        try channel.close().wait()
        let frames = try written(channel)
        #expect(frames.map(\.opcode) == [.text, .connectionClose])
        var code = frames[1].data
        #expect(code.readWebSocketErrorCode() == .goingAway)
    }

    @Test func aCloseFrameAlreadyWrittenStaysTheOnlyOneAndNothingFollowsIt() throws {
        let channel = try socket()
        try channel.writeOutbound(close(.protocolError))
        #expect(throws: ChannelError.outputClosed) { try channel.writeOutbound(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())) }
        try channel.close().wait()
        let frames = try written(channel)
        #expect(frames.count == 1)
        var code = frames[0].data
        #expect(code.readWebSocketErrorCode() == .protocolError)
    }
}
