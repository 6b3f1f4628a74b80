import Foundation
@testable import GatewayApp
import Testing

/// Settings refused at start, naming the variable, before anything runs with them.
struct GatewayConfigurationTests {
    func configuration(_ extra: [String: String]) throws -> GatewayConfiguration {
        var values = ["COMFYUI_SERVER": "http://127.0.0.1:9", "OUTPUT_DIR": NSTemporaryDirectory(), "WORKFLOW_DIR": NSTemporaryDirectory()]
        values.merge(extra) { $1 }
        return try GatewayConfiguration(Environment(values))
    }

    @Test func aPingIntervalThatNginxWouldOutwaitIsRefused() throws {
        #expect(try configuration(["WS_PING_INTERVAL": "60s"]).pingInterval == .seconds(60))
        do {
            _ = try configuration(["WS_PING_INTERVAL": "2m"])
            Issue.record("a 2-minute ping interval was taken; nginx drops sockets silent for 120 s")
        } catch let error as ConfigurationError {
            #expect(error.variable == "WS_PING_INTERVAL")
            #expect(error.problem.contains("120 s"))
        }
    }
}
