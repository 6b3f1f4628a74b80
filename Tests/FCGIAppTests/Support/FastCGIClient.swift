import Foundation

/// One FastCGI request straight to the app's socket, as nginx would send it but with the
/// parameters a test chooses: what a direct FastCGI peer (a TCP listener's) could send.
enum FastCGIClient {
    /// The response's STDOUT: the CGI head (`Status: ...`) and body.
    static func request(socketPath: String, parameters: [(String, String)], body: [UInt8] = []) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            for (index, byte) in socketPath.utf8.prefix(path.count - 1).enumerated() { path[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw TestFailure("connect to \(socketPath) failed") }
        var pairs: [UInt8] = []
        for (name, value) in parameters {
            pairs += length(name.utf8.count) + length(value.utf8.count) + Array(name.utf8) + Array(value.utf8)
        }
        let begin: [UInt8] = [0, 1, 0, 0, 0, 0, 0, 0]  // role RESPONDER, no keep-alive
        var bytes = record(1, begin) + record(4, pairs) + record(4, [])
        if !body.isEmpty { bytes += record(5, body) }
        bytes += record(5, [])
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == bytes.count else { throw TestFailure("send failed") }
        // Records until END_REQUEST (type 3); STDOUT (type 6) carries the response.
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got <= 0 { break }
            received += buffer[..<got]
        }
        var stdout: [UInt8] = []
        var offset = 0
        while offset + 8 <= received.count {
            let type = received[offset + 1]
            let contentLength = Int(received[offset + 4]) << 8 | Int(received[offset + 5])
            let padding = Int(received[offset + 6])
            let content = received[(offset + 8)..<min(received.count, offset + 8 + contentLength)]
            if type == 6 { stdout += content }
            if type == 3 { break }
            offset += 8 + contentLength + padding
        }
        return String(decoding: stdout, as: UTF8.self)
    }

    private static func record(_ type: UInt8, _ content: [UInt8]) -> [UInt8] {
        [1, type, 0, 1, UInt8(content.count >> 8), UInt8(content.count & 0xFF), 0, 0] + content
    }

    private static func length(_ count: Int) -> [UInt8] {
        count < 128 ? [UInt8(count)] : [UInt8(0x80 | (count >> 24)), UInt8((count >> 16) & 0xFF), UInt8((count >> 8) & 0xFF), UInt8(count & 0xFF)]
    }
}
