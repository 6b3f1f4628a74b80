@testable import Comfy
import Testing

/// The health rules over an injected clock: timed events in, health and actions out.
struct BackendHealthMonitorTests {
    enum Event {
        case connect, disconnect, probeOK, probeFailed, progress, confirmedRunning, restOK, restFailed
        case prompts(Int)
        /// Ticks at this moment and expects the action and the health after it.
        case tick(BackendHealthMonitor.Action, BackendHealth)
    }

    struct Scenario: CustomTestStringConvertible, Sendable {
        var name: String
        /// (seconds since the start, event)
        var events: [(Double, Event)]
        var testDescription: String { name }
    }

    static let timing = BackendTiming(failoverAfter: .seconds(10), probeInterval: .seconds(5), stallTimeout: .seconds(60))

    static let scenarios: [Scenario] = [
        Scenario(name: "down until the socket connects, up after", events: [
            (0, .tick(.none, .down)), (1, .connect), (1, .tick(.none, .up)),
        ]),
        Scenario(name: "two failed probes in a row take it down; one success brings it back", events: [
            (0, .connect), (1, .probeFailed), (1, .tick(.none, .up)),
            (2, .probeFailed), (2, .tick(.none, .down)),
            (3, .probeOK), (3, .tick(.none, .up)),
        ]),
        Scenario(name: "a drop with prompts in flight fails them over after failoverAfter, once", events: [
            (0, .connect), (0, .prompts(2)), (5, .disconnect), (5, .tick(.none, .down)),
            (14.9, .tick(.none, .down)), (15, .tick(.failOver, .down)), (16, .tick(.none, .down)),
        ]),
        Scenario(name: "a socket back before failoverAfter keeps its prompts", events: [
            (0, .connect), (0, .prompts(1)), (5, .disconnect), (9, .connect), (20, .tick(.none, .up)),
        ]),
        Scenario(name: "a drop without prompts moves nothing", events: [
            (0, .connect), (1, .disconnect), (30, .tick(.none, .down)),
        ]),
        Scenario(name: "no news of our prompts for stallTimeout stalls it for as long again", events: [
            (0, .connect), (10, .prompts(2)), (40, .progress), (99, .tick(.none, .up)),
            (100, .tick(.stalled, .down)), (101, .tick(.none, .down)),
            (100, .prompts(0)), (160, .tick(.none, .up)),
        ]),
        Scenario(name: "a suspected stall with our prompt running is cleared and re-armed", events: [
            (0, .connect), (0, .prompts(1)), (60, .tick(.stalled, .down)), (61, .confirmedRunning), (61, .tick(.none, .up)),
            (120, .tick(.none, .up)), (121, .tick(.stalled, .down)),
        ]),
        Scenario(name: "three failed REST calls in a row take it out for restCooloff; then one more failure takes it out again", events: [
            (0, .connect), (1, .restFailed), (1, .restFailed), (1, .tick(.none, .up)),
            (2, .restFailed), (2, .tick(.none, .down)), (31.9, .tick(.none, .down)), (32, .tick(.none, .up)),
            (33, .restFailed), (33, .tick(.none, .down)), (63, .tick(.none, .up)),
            (64, .restOK), (65, .restFailed), (65, .restFailed), (65, .tick(.none, .up)),
        ]),
        Scenario(name: "a socket opened anew ends the REST cooloff, half-open", events: [
            (0, .connect), (1, .restFailed), (1, .restFailed), (1, .restFailed), (1, .tick(.none, .down)),
            (2, .disconnect), (3, .connect), (3, .tick(.none, .up)), (4, .restFailed), (4, .tick(.none, .down)),
        ]),
        Scenario(name: "an answer between REST failures starts the count again", events: [
            (0, .connect), (1, .restFailed), (2, .restFailed), (3, .restOK), (4, .restFailed), (5, .restFailed), (5, .tick(.none, .up)),
        ]),
        Scenario(name: "an idle backend never stalls", events: [
            (0, .connect), (500, .tick(.none, .up)),
        ]),
        Scenario(name: "progress keeps a long job from stalling", events: [
            (0, .connect), (0, .prompts(1)), (50, .progress), (100, .progress), (150, .tick(.none, .up)),
        ]),
    ]

    @Test(arguments: scenarios)
    func healthFollowsItsRules(_ scenario: Scenario) {
        let start = ContinuousClock.now
        var monitor = BackendHealthMonitor(timing: Self.timing, now: start)
        for (index, (seconds, event)) in scenario.events.enumerated() {
            let now = start + .milliseconds(Int64(seconds * 1000))
            switch event {
            case .connect: monitor.connected(at: now)
            case .disconnect: monitor.disconnected(at: now)
            case .probeOK: monitor.probed(ok: true)
            case .probeFailed: monitor.probed(ok: false)
            case .progress: monitor.progressed(at: now)
            case .confirmedRunning: monitor.confirmedRunning(at: now)
            case .restOK: _ = monitor.restCall(ok: true, at: now)
            case .restFailed: _ = monitor.restCall(ok: false, at: now)
            case .prompts(let count): monitor.promptsInFlight(count, at: now)
            case .tick(let action, let health):
                #expect(monitor.tick(at: now) == action, "event \(index) at \(seconds) s")
                #expect(monitor.health == health, "event \(index) at \(seconds) s")
            }
        }
    }
}

/// The monitor names its next deadline, so its watcher sleeps instead of polling.
struct BackendHealthMonitorDeadlineTests {
    @Test func theNextDeadlineIsTheEarliestTimerThatCouldFire() {
        let start = ContinuousClock.now
        let timing = BackendTiming(failoverAfter: .seconds(10), probeInterval: .seconds(5), stallTimeout: .seconds(60))
        var monitor = BackendHealthMonitor(timing: timing, now: start)
        #expect(monitor.nextDeadline == nil)
        monitor.connected(at: start)
        monitor.promptsInFlight(1, at: start + .seconds(1))
        #expect(monitor.nextDeadline == start + .seconds(61))
        monitor.progressed(at: start + .seconds(30))
        #expect(monitor.nextDeadline == start + .seconds(90))
        monitor.disconnected(at: start + .seconds(40))
        #expect(monitor.nextDeadline == start + .seconds(50))
        monitor.promptsInFlight(0, at: start + .seconds(41))
        #expect(monitor.nextDeadline == nil)
        for _ in 0..<3 { _ = monitor.restCall(ok: false, at: start + .seconds(42)) }
        #expect(monitor.nextDeadline == start + .seconds(72), "out until restCooloff has passed")
    }
}
