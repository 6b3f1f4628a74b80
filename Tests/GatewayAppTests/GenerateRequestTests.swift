import Comfy
@testable import GatewayApp
import Testing

/// What of a caller's workflow goes on to ComfyUI.
struct GenerateRequestTests {
    func request(_ workflow: String) throws -> GenerateRequest {
        try GenerateRequest(body: Array(#"{"workflow_data": \#(workflow)}"#.utf8), contentType: "application/json")
    }

    @Test func aNodeGoesOnAsItsClassItsInputsAndItsTitleAlone() throws {
        let deep = String(repeating: "[", count: 120) + String(repeating: "]", count: 120)
        let body = try request("""
            {"1": {"class_type": "PreviewAny", "inputs": {"source": "x"}, "is_changed": ["always"], "extra": \(deep),
                   "_meta": {"title": "Preview", "nested": \(deep)}},
             "2": {"class_type": "EmptyImage", "_meta": {"title": "\(String(repeating: "t", count: 300))"}}}
            """)
        #expect(body.workflow["1"] == .object(["class_type": "PreviewAny", "inputs": .object(["source": "x"]), "_meta": .object(["title": "Preview"])]))
        #expect(body.workflow["2"] == .object(["class_type": "EmptyImage"]), "a title too long to be one is left out")
    }

    @Test func aWorkflowOfMoreValuesThanTheQueueCanQuoteIsRefused() throws {
        let list = Array(repeating: "0", count: GenerateRequest.maxWorkflowValues).joined(separator: ",")
        do {
            _ = try request(#"{"1": {"class_type": "PreviewAny", "inputs": {"source": {"__value__": [\#(list)]}}}}"#)
            Issue.record("passed")
        } catch let error as APIError {
            #expect(error.code == .invalidRequest)
            #expect(error.message.contains("more than \(GenerateRequest.maxWorkflowValues) values"))
        }
        let fits = Array(repeating: "0", count: 1000).joined(separator: ",")
        _ = try request(#"{"1": {"class_type": "PreviewAny", "inputs": {"source": {"__value__": [\#(fits)]}}}}"#)
    }
}
