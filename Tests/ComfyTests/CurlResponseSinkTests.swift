@testable import Comfy
import Testing

/// How the curl client reads a response's header lines (libcurl hands them over one by one).
struct CurlResponseSinkTests {
    @Test func headerLinesAreSplitAtTheFirstColonAndTrimmedAndANewResponseStartsAfresh() {
        let sink = CurlResponseSink(limit: 1 << 20, isCancelled: { false })
        let lines = [
            "HTTP/1.1 100 Continue\r\n", "Server: interim\r\n", "\r\n",
            "HTTP/1.1 200 OK\r\n", "Content-Type:  application/json \r\n", "X-Empty:\r\n", "X-Time: 12:30:00\r\n",
            "X-Name: 画 cat\t\r\n", "not a header\r\n", "\r\n",
        ]
        for line in lines {
            Array(line.utf8).withUnsafeBytes { sink.appendHeaderLine($0) }
        }
        #expect(sink.headers.map(\.0) == ["Content-Type", "X-Empty", "X-Time", "X-Name"])
        #expect(sink.headers.map(\.1) == ["application/json", "", "12:30:00", "画 cat"])
    }
}
