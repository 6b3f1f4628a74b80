@testable import Comfy
import Testing

/// A session's messages reach each socket in order; a socket that stops reading holds few previews.
struct SessionBroadcasterTests {
    private func preview(_ byte: UInt8) -> SessionMessage { .preview(mimeType: "image/jpeg", bytes: [byte]) }

    /// Takes what is waiting, without waiting for more.
    private func drain(_ broadcaster: SessionBroadcaster, _ token: UInt64, _ messages: SessionMessages) async -> [SessionMessage] {
        broadcaster.remove(token)
        var taken: [SessionMessage] = []
        for await message in messages { taken.append(message) }
        return taken
    }

    @Test func aSocketThatIsBehindSkipsPreviewsButKeepsEveryOtherMessageInOrder() async {
        let broadcaster = SessionBroadcaster()
        let (token, messages) = broadcaster.add()
        broadcaster.setPreviews(token, enabled: true)
        for step in 0..<10 {
            broadcaster.send(.processing(progress: Double(step) / 10))
            broadcaster.send(preview(UInt8(step)))
        }
        broadcaster.send(.completed(resultURL: "/api/result/s", imageURL: "/output_images/a.png"))
        var expected: [SessionMessage] = []
        for step in 0..<10 {
            expected.append(.processing(progress: Double(step) / 10))
            if step < SessionBroadcaster.maxWaitingPreviews { expected.append(preview(UInt8(step))) }
        }
        expected.append(.completed(resultURL: "/api/result/s", imageURL: "/output_images/a.png"))
        #expect(await drain(broadcaster, token, messages) == expected)
    }

    @Test func previewsFlowAgainOnceTheSocketHasReadTheWaitingOnes() async {
        let broadcaster = SessionBroadcaster()
        let (token, messages) = broadcaster.add()
        broadcaster.setPreviews(token, enabled: true)
        var iterator = messages.makeAsyncIterator()
        for byte in UInt8(0)..<5 { broadcaster.send(preview(byte)) }
        #expect(await iterator.next() == preview(0))
        #expect(await iterator.next() == preview(1))
        broadcaster.send(preview(7))
        broadcaster.send(preview(8))
        broadcaster.send(preview(9))
        #expect(await iterator.next() == preview(7))
        #expect(await iterator.next() == preview(8))
        broadcaster.remove(token)
        #expect(await iterator.next() == nil)
    }

    @Test func previewsPushedOutOfAFullBufferDoNotCountAsWaiting() async {
        let broadcaster = SessionBroadcaster()
        let (token, messages) = broadcaster.add()
        broadcaster.setPreviews(token, enabled: true)
        broadcaster.send(preview(0))
        broadcaster.send(preview(1))
        // 64 progress messages push both previews out, unread.
        for step in 0..<64 { broadcaster.send(.processing(progress: Double(step) / 64)) }
        broadcaster.send(preview(2))
        let taken = await drain(broadcaster, token, messages)
        #expect(taken.count == 64)
        #expect(taken.last == preview(2))
        #expect(taken.first == .processing(progress: 1.0 / 64))
    }

    @Test func onlySocketsThatAskedForPreviewsGetThem() async {
        let broadcaster = SessionBroadcaster()
        let (watching, previews) = broadcaster.add()
        let (plain, noPreviews) = broadcaster.add()
        broadcaster.setPreviews(watching, enabled: true)
        broadcaster.send(preview(1))
        broadcaster.send(.processing(progress: 0.5))
        #expect(await drain(broadcaster, watching, previews) == [preview(1), .processing(progress: 0.5)])
        #expect(await drain(broadcaster, plain, noPreviews) == [.processing(progress: 0.5)])
    }
}
