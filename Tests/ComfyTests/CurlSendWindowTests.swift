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

/// Answers every request `200` after a pause, one connection at a time, and keeps the paths asked for.
private final class SlowLoopbackServer: Sendable {
    let url: String
    private let listener: Int32
    private let seen = Mutex<[String]>([])
    var paths: [String] { seen.withLock { $0 } }

    init(answerAfter pause: Duration) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, listen(fd, 16) == 0 else { throw CurlError(kind: .other, message: "cannot listen") }
        listener = fd
        url = "http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))"
        Thread.detachNewThread { [self] in
            while true {
                let connection = accept(self.listener, nil, nil)
                guard connection >= 0 else { return }
                var request: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                // The head, and a body as long as Content-Length says.
                while true {
                    let got = recv(connection, &buffer, buffer.count, 0)
                    if got <= 0 { break }
                    request += buffer[..<got]
                    let text = String(decoding: request, as: UTF8.self)
                    guard let end = text.range(of: "\r\n\r\n") else { continue }
                    let length = text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                        .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                    if text.utf8.distance(from: end.upperBound, to: text.endIndex) >= length { break }
                }
                let path = String(decoding: request, as: UTF8.self).split(separator: " ").dropFirst().first.map(String.init) ?? "?"
                self.seen.withLock { $0.append(path) }
                usleep(UInt32(pause.components.seconds * 1_000_000 + pause.components.attoseconds / 1_000_000_000_000))
                let answer = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".utf8)
                _ = answer.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, 0) }
                close(connection)
            }
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}
