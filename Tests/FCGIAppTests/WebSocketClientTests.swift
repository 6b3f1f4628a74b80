import Comfy
import Foundation
import Testing

/// The gateway's own WebSocket client (to ComfyUI, and the tests' painters) against a server
/// that writes its first frame together with its 101, as ComfyUI's first status may arrive.
struct WebSocketClientTests {
    @Test func aFrameThatArrivesInTheSameReadAsTheUpgradeResponseIsNotLost() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("ws-client")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let script = #"""
            import base64, hashlib, socket, sys
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            open(sys.argv[1] + ".tmp", "w").write(str(server.getsockname()[1]))
            __import__("os").rename(sys.argv[1] + ".tmp", sys.argv[1])
            connection, _ = server.accept()
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            key = [line.split(b":", 1)[1].strip() for line in request.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            text = b'{"type":"status","data":{"sid":"first"}}'
            connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
                               + accept + b"\r\n\r\n" + bytes([0x81, len(text)]) + text)
            connection.recv(4096)
            """#
        let portFile = "\(directory)/port"
        let server = try ChildProcess("/usr/bin/env", ["python3", "-c", script, portFile], logPath: "\(directory)/server.log")
        defer { _ = server.stop(SIGKILL, grace: .seconds(1)) }
        try await waitUntil { FileManager.default.fileExists(atPath: portFile) }
        let port = try #require(Int(try String(contentsOfFile: portFile, encoding: .utf8)))
        let first = try await withDeadline(.now + .seconds(10), timeout: { TestFailure("the first frame never arrived") }) {
            try await WebSocketClient.connect(host: "127.0.0.1", port: port, path: "/ws") { session -> String? in
                for try await message in session.messages {
                    if case .text(let text) = message { return text }
                }
                return nil
            }
        }
        #expect(first == #"{"type":"status","data":{"sid":"first"}}"#)
    }
}
