@testable import Comfy
import Testing

/// The scheduler's rules, event by event: no sockets, no clock, just the state machine.
struct JobSchedulerTests {
    /// One step of a scenario and, for `dispatch`, the assignments expected from it.
    enum Step: CustomStringConvertible {
        case submit(UInt64, owner: String, JobPriority)
        /// A job whose models only `eligible` backends have (`nil`: any), loading `checkpoint`.
        case submitModel(UInt64, eligible: Set<Int>?, checkpoint: String?)
        case health(Int, BackendHealth)
        case finish(UInt64)
        case retry(UInt64, expect: Bool)
        case dispatch([(job: UInt64, backend: Int)])
        case refused(UInt64, owner: String, JobPriority)
        /// A prompt an earlier process left on the backend, taken up.
        case occupy(UInt64, owner: String, backend: Int)

        var description: String {
            switch self {
            case .submit(let id, let owner, let priority): "submit \(id) by \(owner) (\(priority))"
            case .submitModel(let id, let eligible, let checkpoint): "submit \(id) for \(eligible.map { "\($0.sorted())" } ?? "any") with \(checkpoint ?? "no checkpoint")"
            case .health(let backend, let health): "backend \(backend) \(health)"
            case .finish(let id): "finish \(id)"
            case .retry(let id, let expect): "retry \(id) → \(expect)"
            case .dispatch(let expected): "dispatch → \(expected.map { "\($0.job)@\($0.backend)" })"
            case .refused(let id, _, _): "submit \(id) refused"
            case .occupy(let id, let owner, let backend): "\(owner)'s prompt \(id) taken up on backend \(backend)"
            }
        }
    }

    struct Scenario: CustomTestStringConvertible, Sendable {
        var name: String
        var backends: Int
        var configuration = SchedulerConfiguration()
        var steps: [Step]
        var testDescription: String { name }
    }

    static let scenarios: [Scenario] = [
        Scenario(name: "a down backend takes nothing; jobs wait until one is up", backends: 1, steps: [
            .submit(1, owner: "a", .batch), .dispatch([]),
            .health(0, .up), .dispatch([(1, 0)]),
        ]),
        Scenario(name: "capacity two per backend: the third job waits for a slot", backends: 1, steps: [
            .health(0, .up),
            .submit(1, owner: "a", .batch), .submit(2, owner: "a", .batch), .submit(3, owner: "a", .batch),
            .dispatch([(1, 0), (2, 0)]),
            .finish(1), .dispatch([(3, 0)]),
        ]),
        Scenario(name: "least loaded first, then the one that started fewer jobs", backends: 2, steps: [
            .health(0, .up), .health(1, .up),
            .submit(1, owner: "a", .batch), .submit(2, owner: "a", .batch), .submit(3, owner: "a", .batch), .submit(4, owner: "a", .batch),
            .dispatch([(1, 0), (2, 1), (3, 0), (4, 1)]),
            .finish(1), .finish(2), .finish(3), .finish(4),
            .submit(5, owner: "a", .batch), .dispatch([(5, 0)]),
            .submit(6, owner: "a", .batch), .dispatch([(6, 1)]),
        ]),
        Scenario(name: "interactive jobs go before batch jobs submitted earlier", backends: 1, configuration: .init(capacityPerBackend: 1), steps: [
            .submit(1, owner: "caller", .batch), .submit(2, owner: "caller", .batch), .submit(3, owner: "painter", .interactive),
            .health(0, .up), .dispatch([(3, 0)]),
            .finish(3), .dispatch([(1, 0)]),
        ]),
        Scenario(name: "painters keeping sketches queued let one batch job go after each burst", backends: 1,
                 configuration: .init(capacityPerBackend: 1, interactiveBurst: 2), steps: [
            .submit(1, owner: "caller", .batch), .submit(2, owner: "caller", .batch),
            .submit(3, owner: "p", .interactive), .submit(4, owner: "q", .interactive), .submit(5, owner: "r", .interactive),
            .submit(6, owner: "s", .interactive),
            .health(0, .up), .dispatch([(3, 0)]),
            .finish(3), .dispatch([(4, 0)]),
            .finish(4), .dispatch([(1, 0)]),
            .finish(1), .dispatch([(5, 0)]),
            .finish(5), .dispatch([(6, 0)]),
            .finish(6), .dispatch([(2, 0)]),
        ]),
        Scenario(name: "a burst counts only while batch jobs wait", backends: 1, configuration: .init(capacityPerBackend: 1, interactiveBurst: 2), steps: [
            .submit(1, owner: "p", .interactive), .submit(2, owner: "q", .interactive), .submit(3, owner: "r", .interactive),
            .submit(4, owner: "s", .interactive), .submit(5, owner: "t", .interactive),
            .health(0, .up), .dispatch([(1, 0)]),
            .finish(1), .dispatch([(2, 0)]),
            .submit(6, owner: "caller", .batch),
            .finish(2), .dispatch([(3, 0)]),
            .finish(3), .dispatch([(4, 0)]),
            .finish(4), .dispatch([(6, 0)]),
            .finish(6), .dispatch([(5, 0)]),
        ]),
        Scenario(name: "with interactiveFirst off the two priorities take turns", backends: 1, configuration: .init(capacityPerBackend: 1, interactiveFirst: false), steps: [
            .submit(1, owner: "p", .interactive), .submit(2, owner: "p", .interactive), .submit(3, owner: "c", .batch), .submit(4, owner: "c", .batch),
            .health(0, .up), .dispatch([(1, 0)]),
            .finish(1), .dispatch([(3, 0)]),
            .finish(3), .dispatch([(2, 0)]),
            .finish(2), .dispatch([(4, 0)]),
        ]),
        Scenario(name: "owners take turns: a fast painter cannot starve the others", backends: 1, configuration: .init(capacityPerBackend: 1), steps: [
            .submit(1, owner: "fast", .interactive), .submit(2, owner: "fast", .interactive), .submit(3, owner: "fast", .interactive),
            .submit(4, owner: "slow", .interactive), .submit(5, owner: "other", .interactive),
            .health(0, .up), .dispatch([(1, 0)]),
            .finish(1), .dispatch([(4, 0)]),
            .finish(4), .dispatch([(5, 0)]),
            .finish(5), .dispatch([(2, 0)]),
        ]),
        Scenario(name: "a failed job goes first in line to another backend", backends: 2, configuration: .init(capacityPerBackend: 1), steps: [
            .health(0, .up), .health(1, .up),
            .submit(1, owner: "a", .batch), .submit(2, owner: "b", .batch), .submit(3, owner: "c", .batch),
            .dispatch([(1, 0), (2, 1)]),
            .health(0, .down), .retry(1, expect: true),
            .finish(2), .dispatch([(1, 1)]),
        ]),
        Scenario(name: "a retried job avoids the backend it failed on when another is free", backends: 2, configuration: .init(capacityPerBackend: 1), steps: [
            .health(0, .up), .health(1, .up),
            .submit(1, owner: "a", .batch), .dispatch([(1, 0)]),
            .retry(1, expect: true), .dispatch([(1, 1)]),
        ]),
        Scenario(name: "a retried job waits for a backend it has not failed on while one is up", backends: 2, configuration: .init(capacityPerBackend: 1), steps: [
            .health(0, .up), .health(1, .up),
            .submit(1, owner: "a", .batch), .submit(2, owner: "b", .batch), .dispatch([(1, 0), (2, 1)]),
            .retry(1, expect: true), .submit(3, owner: "c", .batch), .dispatch([(3, 0)]),
            .finish(2), .dispatch([(1, 1)]),
        ]),
        Scenario(name: "attempts are bounded: the last failure is final", backends: 1, configuration: .init(maxAttempts: 2), steps: [
            .health(0, .up),
            .submit(1, owner: "a", .batch), .dispatch([(1, 0)]),
            .retry(1, expect: true), .dispatch([(1, 0)]),
            .retry(1, expect: false), .dispatch([]),
        ]),
        Scenario(name: "a full queue refuses new jobs; a slot frees room", backends: 1, configuration: .init(capacityPerBackend: 1, maxQueuedJobs: 2), steps: [
            .health(0, .up),
            .submit(1, owner: "a", .batch), .dispatch([(1, 0)]),
            .submit(2, owner: "a", .batch), .submit(3, owner: "b", .batch), .refused(4, owner: "c", .batch),
            .finish(1), .dispatch([(2, 0)]),
            .submit(4, owner: "c", .batch),
        ]),
        Scenario(name: "painters' jobs fill half the waiting line at most; callers' take the rest", backends: 1, configuration: .init(capacityPerBackend: 1, maxQueuedJobs: 4), steps: [
            .health(0, .up),
            .submit(1, owner: "painter-1", .interactive), .dispatch([(1, 0)]),
            .submit(2, owner: "painter-2", .interactive), .submit(3, owner: "painter-3", .interactive),
            .refused(4, owner: "painter-4", .interactive),
            .submit(5, owner: "caller-1", .batch), .submit(6, owner: "caller-2", .batch),
            .refused(7, owner: "caller-3", .batch),
            .finish(1), .dispatch([(2, 0)]),
            .submit(8, owner: "painter-4", .interactive),
        ]),
        Scenario(name: "with no waiting line allowed, only jobs a free backend takes are admitted", backends: 1, configuration: .init(capacityPerBackend: 1, maxQueuedJobs: 0), steps: [
            .health(0, .up),
            .submit(1, owner: "a", .batch), .dispatch([(1, 0)]),
            .refused(2, owner: "b", .interactive),
            .finish(1), .submit(3, owner: "b", .interactive), .dispatch([(3, 0)]),
        ]),
        Scenario(name: "a draining backend finishes its jobs and takes no new ones", backends: 2, configuration: .init(capacityPerBackend: 1), steps: [
            .health(0, .up), .health(1, .up),
            .submit(1, owner: "a", .batch), .dispatch([(1, 0)]),
            .health(0, .draining), .submit(2, owner: "a", .batch), .dispatch([(2, 1)]),
            .finish(1), .submit(3, owner: "a", .batch), .dispatch([]),
        ]),
        Scenario(name: "a caller leaving removes its queued job", backends: 1, configuration: .init(capacityPerBackend: 1), steps: [
            .health(0, .up),
            .submit(1, owner: "a", .batch), .submit(2, owner: "b", .batch), .submit(3, owner: "c", .batch),
            .dispatch([(1, 0)]),
            .finish(2), .finish(1), .dispatch([(3, 0)]),
        ]),
        Scenario(name: "a job goes only where its models are, and waits while those backends are full", backends: 2, configuration: .init(capacityPerBackend: 1), steps: [
            .health(0, .up), .health(1, .up),
            .submitModel(1, eligible: [1], checkpoint: "b"), .dispatch([(1, 1)]),
            .submitModel(2, eligible: [1], checkpoint: "b"), .dispatch([]),
            .submit(3, owner: "c", .batch), .dispatch([(3, 0)]),
            .finish(1), .dispatch([(2, 1)]),
        ]),
        Scenario(name: "prompts taken up after a restart fill their backend first; new jobs wait for them", backends: 2, configuration: .init(capacityPerBackend: 2), steps: [
            .health(0, .up), .health(1, .up),
            // Three were left on backend 0, one over its capacity: ComfyUI has them anyway.
            .occupy(1, owner: "a", backend: 0), .occupy(2, owner: "a", backend: 0), .occupy(3, owner: "b", backend: 0),
            .submit(4, owner: "c", .batch), .submit(5, owner: "c", .batch), .submit(6, owner: "c", .batch),
            .dispatch([(4, 1), (5, 1)]),
            .finish(1), .dispatch([]),
            .finish(2), .dispatch([(6, 0)]),
        ]),
        Scenario(name: "at equal load a backend that ran the checkpoint last wins; a busier one does not", backends: 2, steps: [
            .health(0, .up), .health(1, .up),
            .submitModel(1, eligible: nil, checkpoint: "x"), .dispatch([(1, 0)]), .finish(1),
            // Backend 1 started fewer jobs: an unrelated checkpoint evens the count there.
            .submitModel(2, eligible: nil, checkpoint: "y"), .dispatch([(2, 1)]), .finish(2),
            .submitModel(3, eligible: nil, checkpoint: "y"), .dispatch([(3, 1)]),
            .submitModel(4, eligible: nil, checkpoint: "y"), .dispatch([(4, 0)]),
        ]),
    ]

    @Test(arguments: scenarios)
    func schedulerFollowsItsRules(_ scenario: Scenario) {
        var scheduler = JobScheduler(backendCount: scenario.backends, configuration: scenario.configuration)
        for (index, step) in scenario.steps.enumerated() {
            switch step {
            case .submit(let id, let owner, let priority):
                #expect(scheduler.submit(id, owner: owner, priority: priority) == .queued, "step \(index): \(step)")
            case .submitModel(let id, let eligible, let checkpoint):
                #expect(scheduler.submit(id, owner: "a", priority: .batch, eligible: eligible, checkpoint: checkpoint) == .queued, "step \(index): \(step)")
            case .refused(let id, let owner, let priority):
                #expect(scheduler.submit(id, owner: owner, priority: priority) != .queued, "step \(index): \(step)")
            case .health(let backend, let health):
                scheduler.setHealth(backend, health)
            case .finish(let id):
                scheduler.finish(id)
            case .occupy(let id, let owner, let backend):
                scheduler.occupy(id, owner: owner, on: backend)
            case .retry(let id, let expect):
                #expect(scheduler.retry(id) == expect, "step \(index): \(step)")
            case .dispatch(let expected):
                let got = scheduler.dispatch()
                #expect(got == expected.map { JobScheduler.Assignment(job: $0.job, backend: $0.backend) }, "step \(index): \(step), got \(got)")
            }
        }
    }

    @Test func hundredJobsOnTwoEqualBackendsSplitEvenly() {
        var scheduler = JobScheduler(backendCount: 2, configuration: SchedulerConfiguration())
        scheduler.setHealth(0, .up)
        scheduler.setHealth(1, .up)
        for id in 1...100 { _ = scheduler.submit(UInt64(id), owner: "caller-\(id % 7)", priority: .batch) }
        var counts = [0, 0]
        var running: [UInt64] = []
        while scheduler.queued > 0 || !running.isEmpty {
            for assignment in scheduler.dispatch() {
                counts[assignment.backend] += 1
                running.append(assignment.job)
            }
            // Jobs end in the order they started, as on equally fast backends.
            if !running.isEmpty { scheduler.finish(running.removeFirst()) }
        }
        #expect(counts == [50, 50])
    }
}
