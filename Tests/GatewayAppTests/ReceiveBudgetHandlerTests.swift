import Comfy
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

    func socket(_ budget: ReceiveBudget, from address: String = "10.0.0.1", messageTimeout: TimeAmount = .seconds(60)) throws -> (EmbeddedChannel, ReceiveBudget.Account) {
        let account = ReceiveBudget.Account(budget: budget, address: address)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ReceiveBudgetHandler(account: account, messageTimeout: messageTimeout))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        return (channel, account)
    }

    /// Whether the socket was closed with 1013 (try again later).
    func refused(_ channel: EmbeddedChannel) throws -> Bool {
        guard let close = try channel.readOutbound(as: WebSocketFrame.self), close.opcode == .connectionClose else { return false }
        var data = close.data
        return data.readWebSocketErrorCode() == .unknown(1013) && !channel.isActive
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
        #expect(budget.taken == 20_000, "the small message is whole and free; behind it, waiting for the reader, the big one has no free bytes")
        _ = try channel.finish()
        #expect(budget.taken == 0, "the closed socket gave up the message arriving")
        account.close()
        account.messageDone()
        #expect(budget.taken == 0, "and nothing twice")
    }

    @Test func aWholeMessageWaitingForTheReaderStaysHeldAfterTheSocketClosesUntilTheReaderIsGone() throws {
        let budget = ReceiveBudget(limit: 1 << 20, largestMessage: 100_000)
        let (channel, account) = try socket(budget)
        try feed(channel, frame(0x2, Array(repeating: 0, count: 50_000)))
        #expect(budget.taken == 50_008 - ReceiveBudget.freeBytes)
        _ = try channel.finish()
        #expect(budget.taken == 50_008 - ReceiveBudget.freeBytes, "the reader may still be handling it")
        account.close()
        #expect(budget.taken == 0)
        account.messageArrived()
        #expect(budget.taken == 0, "nothing arrives for a closed account")
    }

    @Test func aMessageNotWholeInTimeClosesTheSocketWith1008() throws {
        let budget = ReceiveBudget(limit: 1 << 20, largestMessage: 100_000)
        let (prompt, _) = try socket(budget, messageTimeout: .seconds(5))
        try feed(prompt, frame(0x2, Array(repeating: 0, count: 40_000)))
        prompt.embeddedEventLoop.advanceTime(by: .seconds(6))
        #expect(prompt.isActive, "a whole message has no deadline")
        let (trickle, _) = try socket(budget, from: "10.0.0.2", messageTimeout: .seconds(5))
        try feed(trickle, frame(0x2, Array(repeating: 0, count: 40_000)).prefix(30_000))
        trickle.embeddedEventLoop.advanceTime(by: .seconds(4))
        try feed(trickle, [0])
        #expect(trickle.isActive)
        trickle.embeddedEventLoop.advanceTime(by: .seconds(2))
        let close = try #require(try trickle.readOutbound(as: WebSocketFrame.self))
        var data = close.data
        #expect(data.readWebSocketErrorCode() == .policyViolation)
        #expect(!trickle.isActive)
        #expect(budget.taken == 40_008 - ReceiveBudget.freeBytes, "the trickling socket gave its bytes back; the other's whole message waits for its reader")
    }

    @Test func anAddressOrAnIPv6NetworkHoldsAtMostItsShareAndTheBudgetBoundsThemAll() throws {
        // A sixteenth of 100 kB, but at least two largest messages: 40,028 bytes for each address.
        let budget = ReceiveBudget(limit: 100_000, largestMessage: 20_000)
        #expect(budget.perAddress == 40_028)
        let message = frame(0x2, Array(repeating: 0, count: 60_000))
        let held = 40_000 - ReceiveBudget.freeBytes
        var open: [EmbeddedChannel] = []
        func send(_ count: Int, from address: String) throws -> EmbeddedChannel {
            let (channel, _) = try socket(budget, from: address)
            try feed(channel, message.prefix(count))
            open.append(channel)
            return channel
        }
        _ = try send(40_000, from: "10.0.0.1")
        let greedy = try send(20_000, from: "10.0.0.1")
        #expect(budget.taken == held + 20_000 - ReceiveBudget.freeBytes)
        try feed(greedy, message[20_000..<35_000])
        #expect(try refused(greedy), "beyond its address's share")
        #expect(budget.taken == held, "the refused socket gave back what it held; the other keeps its part")

        #expect(try !refused(send(40_000, from: "10.0.0.2")), "another address has a share of its own")
        #expect(try !refused(send(40_000, from: "2001:db8:0:1::1")))
        #expect(try refused(send(40_000, from: "2001:db8:0:1:ffff::2")), "one IPv6 /64 is one share")
        #expect(try !refused(send(40_000, from: "2001:db8:0:2::1")))
        #expect(budget.taken == 4 * held)
        #expect(try refused(send(40_000, from: "10.0.0.3")), "beyond the budget of all")
        for channel in open where channel.isActive { _ = try channel.finish() }
        #expect(budget.taken == 0)
        #expect(AddressShare.name(of: "2001:DB8::7") == "20010db800000000/64")
        #expect(AddressShare.name(of: "192.0.2.7") == "192.0.2.7")
    }

    @Test func aFullBudgetGivesUpTheRichestAddressesMessageArrivingForAnAddressHoldingLess() throws {
        // 60 kB in all, 40,028 bytes for each address.
        let budget = ReceiveBudget(limit: 60_000, largestMessage: 20_000)
        let message = frame(0x2, Array(repeating: 0, count: 60_000))
        func send(_ count: Int, from address: String) throws -> EmbeddedChannel {
            let (channel, _) = try socket(budget, from: address)
            try feed(channel, message.prefix(count))
            return channel
        }
        // Two addresses trickle large messages until the budget is nearly full: one /64 holds
        // 23,616 + 13,616 bytes, the other 21,616 (each socket's first 16 KiB are free).
        let richest = try send(40_000, from: "2001:db8:0:1::1")
        let sibling = try send(30_000, from: "2001:db8:0:1::2")
        let other = try send(38_000, from: "10.0.0.2")
        #expect(budget.taken == 58_848)

        // A painter holding nothing: its sketch takes the place of the richest address's largest message.
        let (painter, painterAccount) = try socket(budget, from: "10.0.0.3")
        let sketch = frame(0x2, Array(repeating: 1, count: 20_000))
        try feed(painter, sketch)
        richest.embeddedEventLoop.run()
        #expect(try refused(richest), "given up, with 1013")
        #expect(painter.isActive && sibling.isActive && other.isActive)
        var passed: [UInt8] = []
        while var buffer = try painter.readInbound(as: ByteBuffer.self) { passed += buffer.readBytes(length: buffer.readableBytes) ?? [] }
        #expect(passed == sketch, "the sketch passes whole")
        #expect(budget.taken == 13_616 + 21_616 + 3_624)

        // An address that would hold more than the richest one does gets no room.
        let newcomer = try send(40_000, from: "10.0.0.4")
        for channel in [sibling, other] { channel.embeddedEventLoop.run() }
        #expect(try refused(newcomer))
        #expect(sibling.isActive && other.isActive)

        painterAccount.messageDone()
        for channel in [sibling, other, painter] { _ = try channel.finish() }
        #expect(budget.taken == 0, "and nothing given back twice")
    }

    @Test func nothingIsGivenUpWhenGivingUpAllThatMayGoWouldNotMakeRoom() throws {
        let budget = ReceiveBudget(limit: 60_000, largestMessage: 20_000)
        let message = frame(0x2, Array(repeating: 0, count: 60_000))
        var open: [EmbeddedChannel] = []
        func send(_ bytes: some Sequence<UInt8>, from address: String) throws -> EmbeddedChannel {
            let (channel, _) = try socket(budget, from: address)
            try feed(channel, bytes)
            open.append(channel)
            return channel
        }
        // Whole messages waiting for their readers (20,000 and 25,000 bytes held), which cannot be
        // given up; one address's two messages arriving (8,000 and 4,000).
        _ = try send(frame(0x2, Array(repeating: 1, count: 36_376)), from: "10.0.0.11")
        _ = try send(frame(0x2, Array(repeating: 2, count: 41_376)), from: "10.0.0.12")
        let larger = try send(message.prefix(24_384), from: "10.0.0.13")
        let smaller = try send(message.prefix(20_384), from: "10.0.0.13")
        #expect(budget.taken == 57_000)
        // 11,500 more need 8,500 freed: the larger message frees 8,000, and then its address
        // holds less than the newcomer would.
        let newcomer = try send(message.prefix(27_884), from: "10.0.0.14")
        for channel in [larger, smaller] { channel.embeddedEventLoop.run() }
        #expect(try refused(newcomer))
        #expect(larger.isActive && smaller.isActive, "nobody closed for nothing")
        #expect(budget.taken == 57_000)
        for channel in open where channel.isActive { _ = try channel.finish() }
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
