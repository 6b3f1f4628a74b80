import GatewayApp
import Testing

/// The supervisor's pauses before starting a stopped app again.
struct RestartBackoffTests {
    @Test func aFirstStopRestartsAtOnceAndQuickStopsAfterItDoubleThePauseUpTo30Seconds() {
        var backoff = RestartBackoff()
        let pauses = (0..<9).map { _ in backoff.pause(afterRunning: .seconds(2)) }
        #expect(pauses == [.zero, .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30), .seconds(30), .seconds(30)])
    }

    @Test func aRunOfAMinuteEndsTheStreak() {
        var backoff = RestartBackoff()
        _ = backoff.pause(afterRunning: .seconds(1))
        _ = backoff.pause(afterRunning: .seconds(1))
        #expect(backoff.pause(afterRunning: .seconds(59)) == .seconds(2))
        #expect(backoff.pause(afterRunning: .seconds(60)) == .zero)
        #expect(backoff.pause(afterRunning: .milliseconds(10)) == .seconds(1))
    }

    @Test func aStreakOfAnyLengthStaysAtTheLongestPause() {
        var backoff = RestartBackoff()
        for _ in 0..<10_000 { _ = backoff.pause(afterRunning: .zero) }
        #expect(backoff.pause(afterRunning: .zero) == RestartBackoff.longest)
    }
}
