@testable import Comfy
import Foundation
import Testing

/// `OutboundURL`'s pin on a real curl handle: the name is reached at the checked address, not
/// looked up (the name here resolves nowhere), and again on the same reused handle.
struct CurlPinTests {
    @Test func aPinnedNameIsReachedAtItsCheckedAddressOnEachUseOfAReusedHandle() async throws {
        let server = try SlowLoopbackServer(answerAfter: .zero)
        defer { server.stop() }
        let port = try #require(server.url.split(separator: ":").last.map(String.init))
        let http = CurlHTTPClient(threads: 1)
        for path in ["/first", "/second"] {
            var request = CurlRequest(url: "http://pinned.invalid:\(port)\(path)")
            OutboundURL(url: request.url, resolve: ["+pinned.invalid:\(port):127.0.0.1"]).pin(&request)
            #expect(try await http.execute(request).status == 200)
        }
        #expect(server.paths == ["/first", "/second"])
        try await http.shutdown()
    }
}
