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

    @Test func theSocketReceiveBudgetHoldsAtLeastTheLargestMessage() throws {
        #expect(try configuration([:]).webSocketReceiveBudget == 256 << 20)
        #expect(try configuration(["MAX_SKETCH_BYTES": "\(100 << 20)"]).webSocketReceiveBudget == 4 * ((100 << 20) * 4 / 3 + 65536))
        #expect(try configuration(["MAX_SKETCH_BYTES": "600000", "WS_RECEIVE_BUDGET": "1000000"]).webSocketReceiveBudget == 1_000_000)
        #expect(throws: ConfigurationError.self, "a full-size sketch could never arrive") {
            try configuration(["MAX_SKETCH_BYTES": "600000", "WS_RECEIVE_BUDGET": "800000"])
        }
    }

    @Test func aMetricsTokenThatIsShortOrHoldsSpacesIsRefused() throws {
        #expect(try configuration([:]).operatorToken == nil)
        #expect(try configuration(["METRICS_TOKEN": ""]).operatorToken == nil)
        #expect(try configuration(["METRICS_TOKEN": String(repeating: "a", count: 16)]).operatorToken != nil)
        for token in ["short", "sixteen chars ok?", String(repeating: "é", count: 20)] {
            #expect(throws: ConfigurationError.self, "\(token)") { try configuration(["METRICS_TOKEN": token]) }
        }
    }

    @Test func pathsNginxCannotQuoteAndSocketPathsPastTheirLimitAreRefused() throws {
        #expect(try configuration(["RUN_DIR": "/tmp/with space"]).site.runDirectory == "/tmp/with space")
        for (variable, path) in [("RUN_DIR", "/tmp/a\"b"), ("OUTPUT_DIR", "/tmp/$home"), ("STATIC_DIR", "/tmp/a\\b"), ("RUN_DIR", "/tmp/a\nb")] {
            do {
                _ = try configuration([variable: path])
                Issue.record("\(variable)=\(path) was taken")
            } catch let error as ConfigurationError {
                #expect(error.variable == variable)
            }
        }
        let long = "/tmp/" + String(repeating: "d", count: 100)
        do {
            _ = try configuration(["RUN_DIR": long])
            Issue.record("a socket path past 107 bytes was taken")
        } catch let error as ConfigurationError {
            #expect(error.variable == "RUN_DIR")
            #expect(error.problem.contains("at most 107"))
        }
    }

    @Test func drawingAuthWithKeysTurnedOffIsRefused() throws {
        #expect(try configuration(["DRAWING_AUTH": "true"]).drawingAuth)
        do {
            _ = try configuration(["DRAWING_AUTH": "true", "AUTH": "off"])
            Issue.record("DRAWING_AUTH without keys was taken; its tokens would go to whoever names a session first")
        } catch let error as ConfigurationError {
            #expect(error.variable == "DRAWING_AUTH")
            #expect(error.problem.contains("AUTH=off"))
        }
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
