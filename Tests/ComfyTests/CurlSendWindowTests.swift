@testable import Comfy
import Foundation
import Synchronization
import Testing

/// `CurlRequest.sendBy` and `deadline` on a real loopback HTTP server: a request whose window
/// closes while it waits for a free thread of the client is never sent (a prompt whose lease ran
/// out meanwhile would run for an instance that no longer holds its job; an input image's fetch
/// would outlast `INPUT_URL_TIMEOUT` by the time other callers' fetches held every thread).
struct CurlSendWindowTests {
    @Test func aRequestWhoseWindowClosedWhileItWaitedForAThreadIsNeverSent() async throws {
        let server = try SlowLoopbackServer(answerAfter: .milliseconds(600))
        defer { server.stop() }
        let http = CurlHTTPClient(threads: 1)
        // The client's one thread is busy with a slow exchange.
        async let slow = http.execute(CurlRequest(url: "\(server.url)/slow"))
        try await Task.sleep(for: .milliseconds(150))
        var late = CurlRequest(method: "POST", url: "\(server.url)/prompt", body: Array("{}".utf8))
        late.sendBy = .now + .milliseconds(100)
        let outcome: Result<CurlResponse, any Error>
        do { outcome = .success(try await http.execute(late)) } catch { outcome = .failure(error) }
        #expect((try? outcome.get()) == nil)
        if case .failure(let error) = outcome { #expect((error as? CurlError)?.kind == .tooLate, "\(error)") }
        #expect(try await slow.status == 200)
        // In time, the same request goes out.
        var onTime = CurlRequest(method: "POST", url: "\(server.url)/prompt", body: Array("{}".utf8))
        onTime.sendBy = .now + .seconds(5)
        #expect(try await http.execute(onTime).status == 200)
        #expect(server.paths == ["/slow", "/prompt"])
        try await http.shutdown()
    }

    @Test func aDeadlineCountsTheWaitForAThreadAndWhatIsLeftBoundsTheExchange() async throws {
        let server = try SlowLoopbackServer(answerAfter: .milliseconds(600))
        defer { server.stop() }
        let http = CurlHTTPClient(threads: 1)
        let slowEnded = Mutex(false)
        let slow = Task {
            defer { slowEnded.withLock { $0 = true } }
            return try await http.execute(CurlRequest(url: "\(server.url)/slow"))
        }
        try await Task.sleep(for: .milliseconds(150))
        // Its whole time passes in the wait: its caller hears so at the deadline, while the slow
        // exchange still holds the thread, and it is never sent.
        var queued = CurlRequest(url: "\(server.url)/queued", timeout: .seconds(30))
        queued.deadline = .now + .milliseconds(100)
        await #expect { try await http.execute(queued) } throws: { ($0 as? CurlError)?.message.hasPrefix("not sent") == true }
        #expect(!slowEnded.withLock { $0 }, "the caller did not wait for the thread to be free")
        #expect(try await slow.value.status == 200)
        // Sent with 300 ms left of a 30 s timeout: the server's 600 ms pause outlasts it.
        var short = CurlRequest(url: "\(server.url)/short", timeout: .seconds(30))
        short.deadline = .now + .milliseconds(300)
        await #expect { try await http.execute(short) } throws: { ($0 as? CurlError)?.kind == .timedOut }
        #expect(server.paths == ["/slow", "/short"])
        try await http.shutdown()
    }
}
