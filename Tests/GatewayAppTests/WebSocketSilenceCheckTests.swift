@testable import Comfy
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

/// The ComfyUI socket's silence check, on an event loop whose clock the test moves.
struct WebSocketSilenceCheckTests {
    func socket() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(WebSocketSilenceCheck(interval: .seconds(15)))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8188)).wait()
        return channel
    }

    func written(_ channel: EmbeddedChannel) throws -> [WebSocketOpcode] {
        var opcodes: [WebSocketOpcode] = []
        while let frame = try channel.readOutbound(as: WebSocketFrame.self) {
            #expect(frame.maskKey != nil, "a client's frames are masked")
            opcodes.append(frame.opcode)
        }
        return opcodes
    }

    func hear(_ channel: EmbeddedChannel, _ opcode: WebSocketOpcode) throws {
        try channel.writeInbound(WebSocketFrame(fin: true, opcode: opcode, data: ByteBuffer()))
        _ = try channel.readInbound(as: WebSocketFrame.self)
    }

    @Test func aServerThatKeepsTalkingIsNeverPinged() throws {
        let channel = try socket()
        for _ in 0..<4 {
            try hear(channel, .text)
            channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        }
        #expect(try written(channel) == [])
        #expect(channel.isActive)
    }

    @Test func aSilentServerIsPingedAndKeptWhileItAnswers() throws {
        let channel = try socket()
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try written(channel) == [.ping])
        try hear(channel, .pong)
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try written(channel) == [], "it answered: no ping at this tick")
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try written(channel) == [.ping])
        #expect(channel.isActive)
    }

    @Test func aServerSilentThroughAPingIsClosedAtTheNextTick() throws {
        let channel = try socket()
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try written(channel) == [.ping])
        channel.embeddedEventLoop.advanceTime(by: .seconds(14))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive, "30 s of silence and no pong: the peer is gone")
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(try written(channel) == [], "nothing after the close")
    }
}
