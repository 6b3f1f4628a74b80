@testable import GatewayApp
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Synchronization
import Testing

/// The drawing sockets' pings and revocation checks, on an event loop whose clock the test moves.
struct WebSocketKeepAliveTests {
    final class Revocation: Sendable {
        let revoked = Atomic(false)
        /// How many ticks asked.
        let checks = Atomic(0)
    }

    /// As on a drawing socket: the keep-alive behind the handler that lets one close frame out.
    func socket(_ revocation: Revocation? = nil) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: WebSocketCloseOnce())
        var check: (@Sendable () -> Bool)?
        if let revocation {
            check = {
                revocation.checks.add(1, ordering: .relaxed)
                return revocation.revoked.load(ordering: .relaxed)
            }
        }
        try channel.pipeline.syncOperations.addHandler(WebSocketKeepAlive(interval: .seconds(20), keyRevoked: check, revokedMessage: #"{"status":"error"}"#))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        return channel
    }

    func written(_ channel: EmbeddedChannel) throws -> [WebSocketOpcode] {
        var opcodes: [WebSocketOpcode] = []
        while let frame = try channel.readOutbound(as: WebSocketFrame.self) { opcodes.append(frame.opcode) }
        return opcodes
    }

    @Test func aSocketIsPingedEveryIntervalAndNotBefore() throws {
        let channel = try socket()
        channel.embeddedEventLoop.advanceTime(by: .seconds(19))
        #expect(try written(channel) == [])
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(try written(channel) == [.ping])
        channel.embeddedEventLoop.advanceTime(by: .seconds(40))
        #expect(try written(channel) == [.ping, .ping])
        #expect(channel.isActive)
    }

    @Test func aRevokedKeysSocketHearsWhyAtTheNextTickAndIsClosedWith1008() throws {
        let revocation = Revocation()
        let channel = try socket(revocation)
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        #expect(try written(channel) == [.ping])
        revocation.revoked.store(true, ordering: .relaxed)
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        let text = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(text.opcode == .text && String(buffer: text.data) == #"{"status":"error"}"#)
        var close = try #require(try channel.readOutbound(as: WebSocketFrame.self)).data
        #expect(close.readWebSocketErrorCode() == .policyViolation)
        #expect(!channel.isActive, "closed once the close frame is written")
        let checks = revocation.checks.load(ordering: .relaxed)
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(revocation.checks.load(ordering: .relaxed) == checks, "no tick after the close")
    }

    @Test func theReaderFindingTheKeyRevokedClosesTheSocketTheSameWay() throws {
        let channel = try socket(Revocation())
        try channel.triggerUserOutboundEvent(WebSocketKeepAlive.KeyRevoked()).wait()
        let text = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(text.opcode == .text && String(buffer: text.data) == #"{"status":"error"}"#)
        var close = try #require(try channel.readOutbound(as: WebSocketFrame.self)).data
        #expect(close.readWebSocketErrorCode() == .policyViolation)
        #expect(!channel.isActive)
    }

    @Test func aClosedSocketTicksNoMore() throws {
        let revocation = Revocation()
        let channel = try socket(revocation)
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        #expect(revocation.checks.load(ordering: .relaxed) == 1)
        try channel.close().wait()
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(revocation.checks.load(ordering: .relaxed) == 1)
    }

    @Test func afterACloseFrameGoesOutNoPingNorOtherFrameFollows() throws {
        let revocation = Revocation()
        let channel = try socket(revocation)
        // The reader answers the painter's close: the connection stays until the painter ends it.
        var code = channel.allocator.buffer(capacity: 2)
        code.write(webSocketErrorCode: .normalClosure)
        try channel.writeOutbound(WebSocketFrame(fin: true, opcode: .connectionClose, data: code))
        // Nor any other frame: RFC 6455 allows none after the close.
        _ = try? channel.writeOutbound(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "late")))
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(try written(channel) == [.connectionClose])
        #expect(revocation.checks.load(ordering: .relaxed) == 0)
    }
}
