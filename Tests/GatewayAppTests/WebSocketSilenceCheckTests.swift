@testable import Comfy
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

/// The ComfyUI socket's silence check (and the drawing sockets'), on an event loop whose clock
/// the test moves.
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

    /// Bytes arrive: a whole frame, or a piece of one.
    func hear(_ channel: EmbeddedChannel, _ bytes: [UInt8]) throws {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        _ = try channel.readInbound(as: ByteBuffer.self)
    }

    @Test func aServerThatKeepsTalkingIsNeverPinged() throws {
        let channel = try socket()
        for _ in 0..<4 {
            try hear(channel, [0x81, 0x02, 0x7B, 0x7D])
            channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        }
        #expect(try written(channel) == [])
        #expect(channel.isActive)
    }

    @Test func aSilentServerIsPingedAndKeptWhileItAnswers() throws {
        let channel = try socket()
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try written(channel) == [.ping])
        try hear(channel, [0x8A, 0x00])
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try written(channel) == [], "it answered: no ping at this tick")
        channel.embeddedEventLoop.advanceTime(by: .seconds(15))
        #expect(try written(channel) == [.ping])
        #expect(channel.isActive)
    }

    @Test func aLargeFrameStillArrivingIsNoSilence() throws {
        let channel = try socket()
        // A 60 MB image: its header, then a piece every 10 s for a minute; no whole frame yet.
        try hear(channel, [0x82, 0x7F, 0, 0, 0, 0, 0x03, 0x93, 0x87, 0x00])
        for _ in 0..<6 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(10))
            try hear(channel, Array(repeating: 0, count: 1024))
        }
        #expect(channel.isActive)
        #expect(try written(channel) == [])
    }

    /// On the drawing sockets the gateway is the server: its pings go unmasked.
    @Test func aServerSidePingIsUnmaskedAndASilentPainterIsClosedAsAServerIs() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(WebSocketSilenceCheck(interval: .seconds(20), masksPings: false))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        let ping = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(ping.opcode == .ping && ping.maskKey == nil)
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        #expect(!channel.isActive)
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
