import Comfy
import Foundation
@testable import GatewayApp
import Testing

/// What a caller reads of a backend's failure.
struct APIErrorTests {
    @Test func aBackendFailureDoesNotTellTheCallerTheGPUServersAddress() {
        let backend = "http://10.1.2.3:8188"
        let down = APIError(ComfyError(
            code: .backendUnavailable, message: "ComfyUI at \(backend) is unavailable: Failed to connect to 10.1.2.3 port 8188: Connection refused",
            backend: backend
        ))
        #expect(down.code == .backendUnavailable)
        // curl's reason names the host and port: only the sentence before it is kept.
        #expect(down.message == "a ComfyUI backend is unavailable")
        #expect(down.details["backend"] == nil)
        let body = String(decoding: down.response.body, as: UTF8.self)
        #expect(!body.contains("10.1.2.3"), "\(body)")

        let pool = APIError(ComfyError(
            code: .backendUnavailable,
            message: "no ComfyUI backend is reachable (http://10.1.2.3:8188: WebSocket: [IPv4]10.1.2.3/10.1.2.3:8188 refused; http://10.1.2.4:8188: not connected)",
            backend: "http://10.1.2.3:8188,http://10.1.2.4:8188"
        ))
        #expect(pool.message == "no ComfyUI backend is reachable")

        let named = APIError(ComfyError(code: .promptLost, message: "ComfyUI at http://gpu-7.internal:8188/comfy lost the prompt: reset", backend: "http://gpu-7.internal:8188/comfy"))
        #expect(named.message == "a ComfyUI backend lost the prompt")
        // ComfyUI's own words stay, without the URL or the host.
        let failed = APIError(ComfyError(
            code: .noImage, message: "ComfyUI has no file x.png on gpu-7.internal (GET /view returned HTTP 404)", backend: "http://gpu-7.internal:8188"
        ))
        #expect(failed.message == "ComfyUI has no file x.png on the backend (GET /view returned HTTP 404)")
        let slotTimeout = APIError(ComfyError(
            code: .timedOut, message: "no ComfyUI backend was free within the job's time (every instance's slots on http://10.1.2.3:8188 are taken)",
            backend: "http://10.1.2.3:8188"
        ))
        #expect(slotTimeout.message == "no ComfyUI backend was free within the job's time (every instance's slots on a ComfyUI backend are taken)")
    }

    @Test func everyErrorCodeIsInThePublishedAPIDocumentWithItsStatus() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let document = try JSONValue.parse(Array(try Data(contentsOf: root.appendingPathComponent("static/openapi.json"))))
        let schema = document["components"]?["schemas"]?["ErrorCode"]
        let listed = Set(schema?["enum"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        let described = schema?["description"]?.stringValue ?? ""
        for code in APIError.Code.allCases {
            #expect(listed.contains(code.rawValue), "\(code.rawValue) is not in ErrorCode's enum")
            #expect(described.contains("\(code.rawValue) \(code.status)"), "\(code.rawValue) \(code.status) is not in ErrorCode's description")
        }
    }

    @Test func noPlaceForALookupOrAFetchInTimeIsA429ToTryAgainNotA400() {
        let lookup = apiError(for: OutboundURL.Refusal(field: "webhook_url", description: "could not be looked up in time", busy: true))
        #expect(lookup.code == .busy && lookup.code.status == 429)
        #expect(lookup.headers.contains { $0.0 == "Retry-After" })
        let fetch = apiError(for: InputImageError(.busy, field: "image", "was not fetched in time"))
        #expect(fetch.code == .busy && fetch.headers.contains { $0.0 == "Retry-After" })
        #expect(apiError(for: OutboundURL.Refusal(field: "webhook_url", description: "not public")).code == .invalidRequest)
    }
}
