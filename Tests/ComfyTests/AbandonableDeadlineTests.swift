@testable import Comfy
import NIOConcurrencyHelpers
import Testing

struct AbandonableDeadlineTests {
    struct TimedOut: Error {}

    @Test func theCallerGetsTheTimeoutWhileAnOperationDeafToCancellationStillRuns() async throws {
        // Like a query whose server died: a wait that no cancellation ends.
        let parked = NIOLockedValueBox<CheckedContinuation<Void, Never>?>(nil)
        let ended = NIOLockedValueBox(false)
        await #expect(throws: TimedOut.self) {
            try await withAbandonableDeadline(.now + .milliseconds(50), timeout: { TimedOut() }) {
                await withCheckedContinuation { continuation in parked.withLockedValue { $0 = continuation } }
                ended.withLockedValue { $0 = true }
            }
        }
        #expect(ended.withLockedValue { $0 } == false, "the operation was left running, not waited for")
        parked.withLockedValue { $0?.resume() }
    }

    @Test func anOperationThatEndsInTimeGivesItsResult() async throws {
        let value = try await withAbandonableDeadline(.now + .seconds(30), timeout: { TimedOut() }) { 42 }
        #expect(value == 42)
    }
}
