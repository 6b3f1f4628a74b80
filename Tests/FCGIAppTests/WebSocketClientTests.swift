import Comfy
import Foundation
import Testing

/// The gateway's own WebSocket client (to ComfyUI, and the tests' painters) against a server
/// that writes its first frame together with its 101, as ComfyUI's first status may arrive.
struct WebSocketClientTests {
    @Test func aFrameThatArrivesInTheSameReadAsTheUpgradeResponseIsNotLost() async throws {
        // The first frame in the same write as the 101.
        let (server, port) = try await Self.rawServer("ws-client", #"""
            text = b'{"type":"status","data":{"sid":"first"}}'
            connection.sendall(switching + bytes([0x81, len(text)]) + text)
            connection.recv(4096)
            """#)
        defer { _ = server.stop(SIGKILL, grace: .seconds(1)) }
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

    /// A whole message over the limit is dropped as it arrives (headers and payloads split over
    /// many reads) and a `gateway_message_too_large` text takes its place; the connection and
    /// the messages around it go on.
    @Test func aMessageOverTheLimitIsReplacedByANoteAndTheConnectionGoesOn() async throws {
        let (server, port) = try await Self.rawServer("ws-client-large", #"""
            def frame(opcode, payload):
                n = len(payload)
                head = bytes([0x80 | opcode]) + (bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n) if n < 65536 else bytes([127]) + struct.pack(">Q", n))
                return head + payload
            def send_in_pieces(data, size, first=0):
                for start in range(0, first):
                    connection.sendall(data[start:start + 1])
                    time.sleep(0.001)
                for start in range(first, len(data), size):
                    connection.sendall(data[start:start + size])
                    time.sleep(0.001)
            connection.sendall(switching + frame(1, b"before"))
            send_in_pieces(frame(2, os.urandom(100000)), 7000, first=20)   # its header byte by byte
            send_in_pieces(frame(1, b"x" * 70000) + frame(2, b"\x89PNG" + b"y" * 60000) + frame(1, b"after"), 9000)
            connection.recv(4096)
            """#)
        defer { _ = server.stop(SIGKILL, grace: .seconds(1)) }
        let received = try await withDeadline(.now + .seconds(20), timeout: { TestFailure("the messages never all arrived") }) {
            try await WebSocketClient.connect(host: "127.0.0.1", port: port, path: "/ws", maxMessageSize: 65536) { session -> [String] in
                var received: [String] = []
                for try await message in session.messages {
                    switch message {
                    case .text(let text): received.append(text)
                    case .binary(let bytes): received.append("binary \(bytes.count) \(bytes.prefix(4) == [0x89, 0x50, 0x4E, 0x47])")
                    }
                    if received.last == "after" { break }
                }
                return received
            }
        }
        #expect(received == [
            "before",
            #"{"type": "gateway_message_too_large", "data": {"bytes": 100000, "binary": true}}"#,
            #"{"type": "gateway_message_too_large", "data": {"bytes": 70000, "binary": false}}"#,
            "binary 60004 true",
            "after",
        ])
    }

    /// A one-connection WebSocket server in Python: it accepts, reads the upgrade request and
    /// runs `body` with `connection` and `switching` (the 101 answer, not sent yet) defined.
    static func rawServer(_ label: String, _ body: String) async throws -> (ChildProcess, Int) {
        let directory = try TestPaths.makeTemporaryDirectory(label)
        let script = #"""
            import base64, hashlib, os, socket, struct, sys, time
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            open(sys.argv[1] + ".tmp", "w").write(str(server.getsockname()[1]))
            os.rename(sys.argv[1] + ".tmp", sys.argv[1])
            connection, _ = server.accept()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            key = [line.split(b":", 1)[1].strip() for line in request.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"

            """# + body
        let portFile = "\(directory)/port"
        let server = try ChildProcess("/usr/bin/env", ["python3", "-c", script, portFile], logPath: "\(directory)/server.log")
        try await waitUntil { FileManager.default.fileExists(atPath: portFile) }
        return (server, try #require(Int(try String(contentsOfFile: portFile, encoding: .utf8))))
    }
}
