@testable import Comfy
import Testing

extension JobDispatcher {
    /// Waits for the slot as a caller does, told "no backend was free" past `deadline`.
    func waitForSlot(_ id: UInt64, deadline: ContinuousClock.Instant, timeout: Duration) async throws -> Int {
        try await waitForSlot(id, deadline: deadline) {
            ComfyError(code: .timedOut, message: "no ComfyUI backend was free within \(timeout.components.seconds) s")
        }
    }
}

/// What the dispatcher takes while the gateway stops: SIGTERM may land between a job's store
/// write and its arrival here, and that job is in flight (its caller waits for it).
struct JobDispatcherDrainTests {
    func upDispatcher() async -> JobDispatcher {
        let dispatcher = JobDispatcher(backendCount: 1, configuration: SchedulerConfiguration(capacityPerBackend: 2))
        await dispatcher.setHealth(0, .up)
        return dispatcher
    }

    @Test func aJobAcceptedBeforeTheDrainGetsItsBackendWhileNewWorkIsRefused() async throws {
        let dispatcher = await upDispatcher()
        await dispatcher.stopAccepting()

        let accepted = try await dispatcher.submit(owner: "caller", priority: .batch, acceptedBeforeDrain: true)
        let backend = try await dispatcher.waitForSlot(accepted, deadline: .now + .seconds(5), timeout: .seconds(5))
        #expect(backend == 0)

        let refused = await #expect(throws: ComfyError.self) {
            try await dispatcher.submit(owner: "painter", priority: .interactive)
        }
        #expect(refused?.code == .backendUnavailable)
        #expect(refused?.message == "the gateway is shutting down")
    }

    @Test func aSlotGivenAtSubmissionIsTakenEvenPastTheDeadline() async throws {
        let dispatcher = await upDispatcher()
        let id = try await dispatcher.submit(owner: "caller", priority: .batch)
        // A free backend was given at once: nothing is waited for, so no deadline can intervene.
        #expect(try await dispatcher.waitForSlot(id, deadline: .now - .seconds(1), timeout: .seconds(1)) == 0)
    }

    @Test func aQueuedJobWhoseWaitHasNotBegunIsAnsweredAtShutdownNotLeftToItsDeadline() async throws {
        let dispatcher = JobDispatcher(backendCount: 1, configuration: SchedulerConfiguration(capacityPerBackend: 1))
        await dispatcher.setHealth(0, .up)
        let running = try await dispatcher.submit(owner: "a", priority: .batch)
        #expect(try await dispatcher.waitForSlot(running, deadline: .now + .seconds(5), timeout: .seconds(5)) == 0)
        // Queued, and its caller not yet in `waitForSlot` when the gateway stops.
        let queued = try await dispatcher.submit(owner: "b", priority: .batch)
        await dispatcher.shutDown()
        let answer = await #expect(throws: ComfyError.self) {
            try await dispatcher.waitForSlot(queued, deadline: .now + .seconds(5), timeout: .seconds(5))
        }
        #expect(answer?.code == .backendUnavailable)
        #expect(answer?.message == "the gateway is shutting down; the job was not started")
        #expect(dispatcher.published.withLockedValue(\.queued) == 0)
    }

    @Test func aStrandedJobWhoseWaitHasNotBegunGetsTheStrandedError() async throws {
        let dispatcher = JobDispatcher(backendCount: 1, configuration: SchedulerConfiguration(capacityPerBackend: 1))
        let queued = try await dispatcher.submit(owner: "a", priority: .batch)
        await dispatcher.failStranded(grace: .zero) { _, _ in ComfyError(code: .backendUnavailable, message: "stranded") }
        let answer = await #expect(throws: ComfyError.self) {
            try await dispatcher.waitForSlot(queued, deadline: .now + .seconds(5), timeout: .seconds(5))
        }
        #expect(answer?.message == "stranded")
        #expect(dispatcher.published.withLockedValue(\.queued) == 0)
    }

    @Test func aStoredJobWaitsOutAnOutageUntilItsQueueDeadlineAndGetsTheBackendThatComesBack() async throws {
        let dispatcher = JobDispatcher(backendCount: 1, configuration: SchedulerConfiguration(capacityPerBackend: 1))
        let stored = try await dispatcher.submit(owner: "a", priority: .batch, waitsOutOutagesUntil: .now + .seconds(60))
        let expired = try await dispatcher.submit(owner: "b", priority: .batch, waitsOutOutagesUntil: .now - .seconds(1))
        let caller = try await dispatcher.submit(owner: "c", priority: .batch)
        await dispatcher.failStranded(grace: .zero) { _, _ in ComfyError(code: .backendUnavailable, message: "stranded") }
        // The caller on the line and the stored job past its queue deadline are told; the other waits.
        for id in [expired, caller] {
            let answer = await #expect(throws: ComfyError.self) {
                try await dispatcher.waitForSlot(id, deadline: .now + .seconds(5), timeout: .seconds(5))
            }
            #expect(answer?.message == "stranded")
        }
        #expect(dispatcher.published.withLockedValue(\.queued) == 1)
        let waiting = Task { try await dispatcher.waitForSlot(stored, deadline: .now + .seconds(30), timeout: .seconds(30)) }
        await dispatcher.setHealth(0, .up)
        #expect(try await waiting.value == 0)
        #expect(dispatcher.published.withLockedValue(\.running) == [1])
    }

    @Test func aStoredJobThatOnlyADownBackendCanRunLeavesTheLineWhileAnotherIsUp() async throws {
        let dispatcher = JobDispatcher(backendCount: 2, configuration: SchedulerConfiguration(capacityPerBackend: 1))
        await dispatcher.setHealth(0, .up)
        // In the backends' line it would hold one of the runner's places for async jobs while
        // backend 0 could run others: it leaves it, told it is within its queue time (to wait in the runner).
        #expect(await dispatcher.isStranded([1], grace: .zero, outageDeadline: .now + .seconds(60)))
        let stored = try await dispatcher.submit(owner: "a", priority: .batch, eligible: [1], waitsOutOutagesUntil: .now + .seconds(60))
        await dispatcher.failStranded(grace: .zero) { _, withinQueueTime in
            ComfyError(code: .backendUnavailable, message: withinQueueTime ? "wait elsewhere" : "stranded")
        }
        let answer = await #expect(throws: ComfyError.self) {
            try await dispatcher.waitForSlot(stored, deadline: .now + .seconds(5), timeout: .seconds(5))
        }
        #expect(answer?.message == "wait elsewhere")
        // With both down, it waits.
        await dispatcher.setHealth(0, .down)
        #expect(!(await dispatcher.isStranded([1], grace: .zero, outageDeadline: .now + .seconds(60))))
    }

    @Test func eachChangeOfABackendsHealthOrModelsIsCountedAndWakesTheParkedJobsWaiter() async throws {
        let dispatcher = JobDispatcher(backendCount: 2, configuration: SchedulerConfiguration(capacityPerBackend: 1))
        func count() -> UInt64 { dispatcher.published.withLockedValue(\.healthChanges) }
        let start = count()
        await dispatcher.setHealth(0, .up)
        await dispatcher.setHealth(0, .up)  // no change
        #expect(count() == start + 1)
        // Woken by a change that came before the wait (kept for it), with the count published first.
        await dispatcher.modelsChanged()
        #expect(count() == start + 2)
        let woken = ContinuousClock.now
        await dispatcher.waitForHealthChange(until: .now + .seconds(30), waiter: JobDispatcher.parkedJobs)
        #expect(ContinuousClock.now - woken < .seconds(10))
    }

    @Test func onceTheDrainTimeIsUpNothingStartsAnyMore() async throws {
        let dispatcher = await upDispatcher()
        await dispatcher.stopAccepting()
        await dispatcher.shutDown()
        await #expect(throws: ComfyError.self) {
            try await dispatcher.submit(owner: "caller", priority: .batch, acceptedBeforeDrain: true)
        }
    }
}
