@testable import Comfy
import Testing

/// Waits by key: early results kept, cancellation answered at once, deadlines that really end.
struct WaiterTableTests {
    @Test func aResultBeforeItsWaiterIsKeptForIt() async throws {
        let table = WaiterTable<String, Int>()
        #expect(!table.resume("a", with: .success(7)))
        #expect(try await table.wait(for: "a") == 7)
    }

    @Test func aKeptResultIsTakenOnceWithoutWaiting() throws {
        let table = WaiterTable<String, Int>()
        #expect(table.takeKept("a") == nil)
        table.resume("a", with: .success(5))
        #expect(try table.takeKept("a")?.get() == 5)
        #expect(table.takeKept("a") == nil)
    }

    @Test func aWaiterGetsWhatArrivesLater() async throws {
        let table = WaiterTable<String, Int>()
        async let value = table.wait(for: "a")
        while !table.isWaiting(for: "a") { await Task.yield() }
        #expect(table.resume("a", with: .success(3)))
        #expect(try await value == 3)
    }

    @Test func cancellationEndsTheWaitAndLeavesNothingBehind() async {
        let table = WaiterTable<String, Int>()
        let waiting = Task { try await table.wait(for: "a") }
        while !table.isWaiting(for: "a") { await Task.yield() }
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(table.waitingKeys.isEmpty)
    }

    @Test func aDeadlineEndsAWaitWithItsOwnError() async {
        struct TooLate: Error {}
        let table = WaiterTable<String, Int>()
        await #expect(throws: TooLate.self) {
            try await withDeadline(.now + .milliseconds(20), timeout: { TooLate() }) { try await table.wait(for: "a") }
        }
        #expect(table.waitingKeys.isEmpty)
    }
}
