@testable import GatewayApp
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

/// The drawing sockets' shared receive budget, fed raw frames as clients send them.
struct ReceiveBudgetHandlerTests {
    /// A client frame: masked unless told, with the shortest length form unless `longForm`.
    func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true, longForm: Bool = false) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let mask: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 && !longForm {
            bytes.append(mask | UInt8(payload.count))
        } else if payload.count <= 0xFFFF && !longForm {
            bytes += [mask | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes += [mask | 127] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
        }
        return bytes + (masked ? [1, 2, 3, 4] : []) + payload
    }

    func socket(_ budget: ReceiveBudget, from address: String = "10.0.0.1") throws -> (EmbeddedChannel, ReceiveBudget.Account) {
        let account = ReceiveBudget.Account(budget: budget, address: address)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ReceiveBudgetHandler(account: account))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        return (channel, account)
    }

    func feed(_ channel: EmbeddedChannel, _ bytes: some Sequence<UInt8>) throws {
        try channel.writeInbound(channel.allocator.buffer(bytes: Array(bytes)))
    }

    /// In pieces of 1, 2, 3, 5 and 997 bytes in turn: headers split anywhere.
    func feedInPieces(_ channel: EmbeddedChannel, _ bytes: [UInt8]) throws {
        var start = 0
        for size in [1, 2, 3, 5, 997].cycled() {
            guard start < bytes.count else { return }
            try feed(channel, bytes[start..<min(bytes.count, start + size)])
            start += size
        }
    }

    @Test func aMessageHoldsItsBytesPastTheFreeOnesUntilTheReaderIsDoneWithIt() throws {
        let budget = ReceiveBudget(limit: 1 << 20, largestMessage: 100_000)
        let (channel, account) = try socket(budget)
        let first = frame(0x1, Array(repeating: 0x61, count: 20_000), fin: false)
        let ping = frame(0x9, [7, 7, 7])
        let last = frame(0x0, Array(repeating: 0x62, count: 5_000))
        try feedInPieces(channel, first + ping)
        #expect(budget.taken == first.count - ReceiveBudget.freeBytes, "the first fragment is held past the free bytes; the ping is free")
        try feedInPieces(channel, last)
        #expect(budget.taken == first.count + last.count - ReceiveBudget.freeBytes, "whole, it waits for the reader")
        var passed: [UInt8] = []
        while var buffer = try channel.readInbound(as: ByteBuffer.self) { passed += buffer.readBytes(length: buffer.readableBytes) ?? [] }
        #expect(passed == first + ping + last, "every byte passes on unchanged")
        account.messageDone()
        #expect(budget.taken == 0)

        // Several frames in one read, a 64-bit length and an unmasked frame (the validator after it refuses those).
        let small = frame(0x1, [0x7B, 0x7D], longForm: true)
        let big = frame(0x2, Array(repeating: 0, count: 30_000), masked: false)
        try feed(channel, small + big.prefix(20_000))
        #expect(budget.taken == 20_000 - ReceiveBudget.freeBytes, "the small message is whole and free; the big one is held past its free bytes")
        _ = try channel.finish()
        #expect(budget.taken == 0, "a closed socket gives back all it held")
        account.messageDone()
        #expect(budget.taken == 0, "and nothing twice")
    }

    @Test func oneAddressHoldsAtMostItsShareAndASocketBeyondItIsClosedWith1013() throws {
        // A quarter of 100 kB, but at least one largest message: 30,014 bytes for each address.
        let budget = ReceiveBudget(limit: 100_000, largestMessage: 30_000)
        #expect(budget.perAddress == 30_014)
        let message = frame(0x2, Array(repeating: 0, count: 60_000))
        let (first, _) = try socket(budget)
        try feed(first, message.prefix(40_000))
        #expect(budget.taken == 40_000 - ReceiveBudget.freeBytes)
        let (greedy, _) = try socket(budget)
        try feed(greedy, message.prefix(20_000))
        #expect(budget.taken == 60_000 - 2 * ReceiveBudget.freeBytes)
        try feed(greedy, message[20_000..<30_000])
        let close = try #require(try greedy.readOutbound(as: WebSocketFrame.self))
        #expect(close.opcode == WebSocketOpcode.connectionClose)
        var data = close.data
        #expect(data.readWebSocketErrorCode() == .unknown(1013))
        #expect(!greedy.isActive)
        #expect(budget.taken == 40_000 - ReceiveBudget.freeBytes, "the refused socket gave back what it held; the other keeps its part")

        // Another address has a share of its own.
        let (other, _) = try socket(budget, from: "10.0.0.2")
        try feed(other, message.prefix(40_000))
        #expect(other.isActive)
        #expect(budget.taken == 2 * (40_000 - ReceiveBudget.freeBytes))
        _ = try first.finish()
        _ = try other.finish()
        #expect(budget.taken == 0)
    }
}

extension Array {
    /// The elements over and over, for ever.
    func cycled() -> some Sequence<Element> {
        sequence(state: 0) { index in
            defer { index = (index + 1) % count }
            return self[index]
        }
    }
}
