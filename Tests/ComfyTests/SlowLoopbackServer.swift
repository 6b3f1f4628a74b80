@testable import Comfy
import Foundation
import Synchronization

/// Answers every request `200` after a pause, one connection at a time, and keeps the paths asked for.
final class SlowLoopbackServer: Sendable {
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
