@testable import GatewayApp
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

/// The drawing socket's byte budget, fed raw frames as a client sends them.
struct ReceiveBudgetHandlerTests {
    /// A masked client frame.
    func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        if payload.count < 126 {
            bytes.append(0x80 | UInt8(payload.count))
        } else {
            bytes += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        return bytes + [1, 2, 3, 4] + payload
    }

    func channel(_ budget: ReceiveBudget) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ReceiveBudgetHandler(budget: budget))
        return channel
    }

    func feed(_ channel: EmbeddedChannel, _ bytes: some Sequence<UInt8>) throws {
        try channel.writeInbound(channel.allocator.buffer(bytes: Array(bytes)))
    }

    @Test func aMessageHoldsItsBytesUntilItsFinalFrameHoweverTheyAreSplitAndControlFramesAreFree() throws {
        let budget = ReceiveBudget(limit: 10_000)
        let channel = try channel(budget)
        let first = frame(0x1, Array(repeating: 0x61, count: 300), fin: false)
        let ping = frame(0x9, [7, 7, 7])
        let last = frame(0x0, Array(repeating: 0x62, count: 50))
        var passed: [UInt8] = []
        // One byte at a time: headers split anywhere.
        for byte in first + ping { try feed(channel, [byte]) }
        #expect(budget.taken == first.count, "the first fragment is held, the ping is not charged")
        for byte in last { try feed(channel, [byte]) }
        #expect(budget.taken == 0, "the message is whole")
        while var buffer = try channel.readInbound(as: ByteBuffer.self) { passed += buffer.readBytes(length: buffer.readableBytes) ?? [] }
        #expect(passed == first + ping + last, "every byte passes on unchanged")
        // Several frames in one read.
        try feed(channel, frame(0x1, [0x7B, 0x7D]) + frame(0x1, Array(repeating: 0x20, count: 200), fin: false).prefix(100))
        #expect(budget.taken == 100)
        _ = try channel.finish()
        #expect(budget.taken == 0, "a closed socket gives back what its unfinished message held")
    }

    @Test func bytesBeyondTheBudgetCloseTheSocketWith1013AndGiveBackWhatItHeld() throws {
        let budget = ReceiveBudget(limit: 1_000)
        let other = try channel(budget)
        try feed(other, frame(0x2, Array(repeating: 0, count: 700)).prefix(600))
        #expect(budget.taken == 600)
        let greedy = try channel(budget)
        try feed(greedy, frame(0x2, Array(repeating: 0, count: 700)).prefix(300))
        #expect(budget.taken == 900)
        try feed(greedy, Array(repeating: 0, count: 200))
        let close = try #require(try greedy.readOutbound(as: WebSocketFrame.self))
        #expect(close.opcode == .connectionClose)
        var data = close.data
        #expect(data.readWebSocketErrorCode() == .unknown(1013))
        #expect(!greedy.isActive)
        #expect(budget.taken == 600, "the other socket keeps its share")
        _ = try other.finish()
        #expect(budget.taken == 0)
    }
}
