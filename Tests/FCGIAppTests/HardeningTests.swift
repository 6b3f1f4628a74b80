import Comfy
import Foundation
import Testing

/// What a black-box probe found at the front door, each answered: nginx's own errors as JSON,
/// security headers, TLS ciphers, unprivileged workers, and RFC 6455 on the drawing socket.
@Suite(.serialized)
struct HardeningTests {
    @Test func errorsNginxMakesItselfAreJSON() async throws {
        try await withGateway("hard-errors") { gateway, _ in
            let port = gateway.port
            let cases: [(String, Int, String)] = [
                ("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\nConnection: close\r\n\r\n", 400, "bad header"),
                ("GET /\(String(repeating: "a", count: 12_000)) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 414, "long URI"),
                ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n", 501, "unknown transfer coding"),
                ("GET / HTTP/2.7\r\nHost: x\r\nConnection: close\r\n\r\n", 505, "unknown HTTP version"),
                ("GET /api/ws/%C3%BC HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "session id outside the grammar"),
            ]
            for (request, status, what) in cases {
                let answer = try RawAnswer(port: port, request: request)
                #expect(answer.status == status, "\(what)")
                #expect(answer.headers["content-type"] == "application/json", "\(what)")
                #expect((try? JSONValue.parse(answer.body))?["error"]?["code"]?.stringValue != nil, "\(what): \(String(decoding: answer.body, as: UTF8.self))")
                #expect(answer.headers["x-content-type-options"] == "nosniff", "\(what)")
            }
            // An unsatisfiable range on a stored image.
            let image = try JSONValue.parse(try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "r"))).body)["url"]?.stringValue ?? ""
            let range = try RawAnswer(port: port, request: "GET \(image) HTTP/1.1\r\nHost: x\r\nRange: bytes=99999999-\r\nConnection: close\r\n\r\n")
            #expect(range.status == 416)
            #expect(range.headers["content-type"] == "application/json")
        }
    }

    @Test func everyAnswerIsNosniffAndThePagesCarryTheirContentSecurityPolicy() async throws {
        try await withGateway("hard-headers") { gateway, _ in
            for path in ["/api/styles", "/healthz", "/nothing-here", "/openapi.json"] {
                #expect(try await gateway.get(path).header("X-Content-Type-Options") == "nosniff", "\(path)")
            }
            for (path, file) in [("/", "index.html"), ("/docs", "docs.html")] {
                let page = try await gateway.get(path)
                let policy = try #require(page.header("Content-Security-Policy"), "\(path)")
                #expect(policy.contains("frame-ancestors 'none'"))
                #expect(policy.contains("object-src 'none'"))
                #expect(!policy.contains("unsafe-inline"))
                #expect(page.header("Referrer-Policy") == "strict-origin-when-cross-origin")
                #expect(page.header("X-Content-Type-Options") == "nosniff")
                // The inline script's own hash, computed here from the served page.
                let html = page.bodyText
                let script = try #require(html.range(of: "<script>").flatMap { open in html.range(of: "</script>", range: open.upperBound..<html.endIndex).map { html[open.upperBound..<$0.lowerBound] } })
                let hash = Data(Digest.sha256(Array(script.utf8))).base64EncodedString()
                #expect(policy.contains("script-src 'sha256-\(hash)'"), "\(file)")
            }
            // No HSTS without TLS (it would pin browsers to a port that speaks no HTTPS).
            #expect(try await gateway.get("/").header("Strict-Transport-Security") == nil)
        }
    }

    @Test func aFastCGIPeerSendingANegativeContentLengthGets400AndTheAppServesOn() async throws {
        try await withGateway("fcgi-length") { gateway, _ in
            let socket = "\(gateway.runDirectory)/fcgi.sock"
            let base = [("REQUEST_METHOD", "POST"), ("DOCUMENT_URI", "/api/generate"), ("SCRIPT_NAME", "/api/generate"), ("REMOTE_ADDR", "127.0.0.1")]
            let answer = try FastCGIClient.request(socketPath: socket, parameters: base + [("CONTENT_TYPE", "application/json"), ("CONTENT_LENGTH", "-1")])
            #expect(answer.hasPrefix("Status: 400"), "\(answer)")
            #expect(answer.contains("CONTENT_LENGTH is negative"), "\(answer)")
            // The same process answers the next request.
            let health = try FastCGIClient.request(socketPath: socket, parameters: [("REQUEST_METHOD", "GET"), ("DOCUMENT_URI", "/healthz"), ("SCRIPT_NAME", "/healthz")])
            #expect(health.hasPrefix("Status: 200"), "\(health)")
            #expect(gateway.app.isRunning)
            #expect(try await gateway.get("/healthz").status == 200)
        }
    }

    /// JSON nested as deep as the parser takes is parsed, checked and freed on a FastCGI
    /// thread's own stack (a 256 KiB stack and a limit of 512 crashed the app): refused with
    /// 400 by the node policy, and the same process answers on. Deeper is refused by the parser.
    @Test func aBodyNestedAsDeepAsTheParserAllowsIsRefusedAndTheAppServesOn() async throws {
        try await withGateway("hard-deep") { gateway, _ in
            let pid = try gateway.appPID()
            // The value of `image` is four levels down.
            for depth in [JSONParser.maxDepth - 4, 500] {
                let wrapped = String(repeating: #"{"__value__":"#, count: depth) + #""a.png""# + String(repeating: "}", count: depth)
                let listed = String(repeating: "[", count: depth) + "1" + String(repeating: "]", count: depth)
                for inner in [wrapped, listed] {
                    let body = #"{"workflow_data":{"1":{"class_type":"LoadImage","inputs":{"image":"# + inner + "}}}}"
                    // Twice: the second finds every cache warm and runs without a suspension.
                    for _ in 0..<2 {
                        let answer = try await gateway.post("/api/generate", body: Array(body.utf8), contentType: "application/json")
                        #expect(answer.status == 400, "depth \(depth): \(answer.status) \(answer.bodyText.prefix(300))")
                        // Past the parser's limit, the parser refuses it; within, the node policy.
                        let refusal = depth > JSONParser.maxDepth - 4 ? "nested deeper than \(JSONParser.maxDepth)" : "nested deeper than \(NodePolicy.maxInputDepth) levels"
                        #expect(answer.bodyText.contains(refusal), "\(answer.bodyText.prefix(300))")
                    }
                }
            }
            #expect(try gateway.appPID() == pid)
            #expect(gateway.app.isRunning)
            #expect(try await gateway.get("/healthz").status == 200)
        }
    }

    /// Each request body still arriving holds an app thread's place and a temporary file: one
    /// client has at most `API_CONNECTIONS` such requests at once, and routes that take no body
    /// refuse one instead of buffering it.
    @Test func oneClientTricklingBodiesHoldsAtMostAPIConnectionsAndRoutesWithoutABodyRefuseOne() async throws {
        try await withGateway("hard-api-connections", environment: ["API_CONNECTIONS": "2"]) { gateway, _ in
            let port = gateway.port
            func trickle() throws -> RawConnection {
                let connection = try RawConnection(port: port)
                try connection.send(
                    "POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"workflow_data\":"
                )
                return connection
            }
            var trickles = try [trickle(), trickle()]
            // Counted from their headers on: the client's next request is refused. (A trickle
            // whose headers nginx read while a probe was in flight was itself refused: it is
            // opened again.)
            try await waitUntil {
                for index in trickles.indices {
                    var answered = pollfd(fd: trickles[index].fd, events: Int16(POLLIN), revents: 0)
                    if poll(&answered, 1, 0) > 0 { trickles[index] = try trickle() }
                }
                return try await gateway.get("/api/styles").status == 429
            }
            let refused = try await gateway.get("/api/styles")
            #expect(refused.status == 429)
            #expect(try JSONValue.parse(refused.body)["error"]?["code"] != nil, "\(refused.bodyText)")
            // Another client is not.
            let other = try RawAnswer(port: port, request: Array("GET /api/styles HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8), from: "127.0.0.2")
            #expect(other.status == 200)
            trickles.removeAll()
            try await waitUntil { try await gateway.get("/api/styles").status == 200 }

            for path in ["/healthz", "/openapi.json", "/api/jobs/00000000-0000-0000-0000-000000000000", "/api/result/some-session"] {
                let answer = try await gateway.post(path, body: Array(repeating: UInt8(ascii: " "), count: 4096))
                #expect(answer.status == 413, "\(path): \(answer.status)")
                #expect(try JSONValue.parse(answer.body)["error"]?["code"] != nil, "\(path): \(answer.bodyText)")
            }
        }
    }

    /// `EVENT_STREAMS=0` means no limit on job event streams, not the API's limit, which their
    /// location sits in.
    @Test func eventStreamsWithoutALimitAreNotHeldToAPIConnections() async throws {
        try await withGateway(
            "hard-streams-unlimited", emulatorArguments: ["--node-delay-ms", "1000"], environment: ["API_CONNECTIONS": "1", "EVENT_STREAMS": "0"]
        ) { gateway, _ in
            let port = gateway.port
            let accepted = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: "watched")))
            let id = try #require(try JSONValue.parse(accepted.body)["id"]?.stringValue, "\(accepted.bodyText)")
            var streams: [RawConnection] = []
            for _ in 0..<3 {
                let stream = try RawConnection(port: port)
                try stream.send("GET /api/jobs/\(id)/events HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAccept: text/event-stream\r\n\r\n")
                let head = String(decoding: stream.receive(), as: UTF8.self)
                #expect(head.hasPrefix("HTTP/1.1 200"), "\(head.prefix(200))")
                streams.append(stream)
            }
            // While they are open, the client's API requests are its own budget's.
            #expect(try await gateway.get("/api/styles").status == 200)
        }
    }

    @Test func nginxWorkersDoNotRunAsRoot() async throws {
        guard getuid() == 0 else { return }  // started as a user, the workers are that user
        try await withGateway("hard-workers") { gateway, _ in
            let master = try #require(Int32(try String(contentsOfFile: "\(gateway.runDirectory)/nginx.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            let workers = processChildren(of: master)
            #expect(!workers.isEmpty)
            for worker in workers {
                let status = try String(contentsOfFile: "/proc/\(worker)/status", encoding: .utf8)
                let uid = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }?.split(separator: "\t").dropFirst().first
                #expect(uid != nil && uid != "0", "worker \(worker) runs as uid \(uid ?? "?")")
            }
            // And they still reach the app and the images.
            #expect(try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "w"))).status == 200)
        }
    }

    @Test func aFolderClosedToOtherUsersKeepsNginxWorkingAsRoot() async throws {
        guard getuid() == 0 else { return }
        let closed = try TestPaths.makeTemporaryDirectory("hard-closed")
        chmod(closed, 0o700)  // as `mktemp -d` makes it: www-data cannot reach the sockets inside
        let directory = "\(closed)/gateway"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP)
        defer { gateway.stop() }
        try await gateway.waitUntilHealthy()
        #expect(try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "closed"))).status == 200)
        #expect(gateway.app.log.contains("nginx's workers run as root"))
    }

    @Test func tlsOffersOnlyForwardSecretAEADSuitesWithHSTSAndAnswersPlainHTTPWithJSON() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("hard-tls")
        let openssl = try ChildProcess(
            "/usr/bin/openssl",
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", "\(directory)/key.pem", "-out", "\(directory)/cert.pem"],
            logPath: "\(directory)/openssl.log"
        )
        #expect(openssl.stop(0) == 0)
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let redirectPort = TestPaths.freePort()
        let gateway = try Gateway(
            directory: directory, backends: [emulator.url], http: testHTTP,
            environment: ["TLS_CERT": "\(directory)/cert.pem", "TLS_KEY": "\(directory)/key.pem", "HTTP_REDIRECT_PORT": "\(redirectPort)"]
        )
        defer { gateway.stop() }
        // nginx answers (plain HTTP on its TLS port: 400), not merely a connect that succeeds.
        try await waitUntil(timeout: .seconds(20)) {
            (try? RawAnswer(port: gateway.port, request: "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))?.status == 400
        }

        func handshake(_ arguments: [String]) throws -> (status: Int32, output: String) {
            let process = try ChildProcess(
                "/bin/sh", ["-c", "printf 'GET /healthz HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' | openssl s_client -connect 127.0.0.1:\(gateway.port) -quiet " + arguments.joined(separator: " ")],
                logPath: "\(directory)/s_client-\(UUID().uuidString.prefix(6)).log"
            )
            let status = process.stop(0, grace: .seconds(15))
            return (status, process.log)
        }
        let modern = try handshake(["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"])
        #expect(modern.output.contains("HTTP/1.1 200"), "\(modern.output)")
        #expect(modern.output.contains("Strict-Transport-Security: max-age=31536000"))
        for weak in ["AES128-SHA", "AES256-SHA256", "ECDHE-RSA-AES128-SHA", "DHE-RSA-AES128-GCM-SHA256"] {
            let refused = try handshake(["-tls1_2", "-cipher", weak])
            #expect(!refused.output.contains("HTTP/1.1"), "\(weak) must not be offered")
        }
        let tls13 = try handshake(["-tls1_3"])
        #expect(tls13.output.contains("HTTP/1.1 200"))

        let plain = try RawAnswer(port: gateway.port, request: "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(plain.status == 400)
        #expect(plain.headers["content-type"] == "application/json")
        #expect(String(decoding: plain.body, as: UTF8.self).contains("HTTPS"))

        // HTTP_REDIRECT_PORT: plain HTTP there is sent on to HTTPS, method and path kept.
        let redirected = try RawAnswer(port: redirectPort, request: "POST /api/jobs?x=1 HTTP/1.1\r\nHost: gw.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        #expect(redirected.status == 308)
        #expect(redirected.headers["location"] == "https://gw.example:\(gateway.port)/api/jobs?x=1")
    }

    /// A painter gone off the network answers no ping: its socket (one of its address's
    /// `DRAWING_CONNECTIONS`, and its session's hold on the idle sweep) ends after two silent
    /// intervals, not when TCP gives up many minutes later.
    @Test func aDrawingSocketThatAnswersNoPingIsClosed() async throws {
        try await withGateway("hard-ws-unanswered", environment: ["WS_PING_INTERVAL": "300ms"]) { gateway, _ in
            let listener = try RawConnection(port: gateway.port)
            try listener.send(
                "GET /api/ws/unanswered HTTP/1.1\r\nHost: 127.0.0.1:\(gateway.port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            #expect(try listener.receiveHead().status == 101)
            var pings = 0
            while pings <= 10, let frame = try? listener.nextFrame() {
                if frame.opcode == 0x9 { pings += 1 }
            }
            // The keep-alive's and the silence check's: two or three, never the eleven it got before.
            #expect((2...3).contains(pings), "\(pings) pings before the connection ended")
        }
    }

    @Test func theDrawingSocketClosesOnFramesThatBreakRFC6455() async throws {
        try await withGateway("hard-ws") { gateway, _ in
            let valid = Array(#"{"type":"new_seed"}"#.utf8)
            let cases: [(String, [UInt8], UInt16?)] = [
                ("unmasked client frame", webSocketFrame(opcode: 0x1, payload: valid, masked: false), 1002),
                ("RSV1 without an extension", webSocketFrame(opcode: 0x1, payload: valid, rsv: 0x4), 1002),
                ("reserved opcode 0x3", webSocketFrame(opcode: 0x3, payload: valid), 1002),
                ("reserved control opcode 0xB", webSocketFrame(opcode: 0xB, payload: []), 1002),
                ("fragmented ping", webSocketFrame(opcode: 0x9, payload: [1], fin: false), 1002),
                ("text that is not UTF-8", webSocketFrame(opcode: 0x1, payload: [0x7B, 0xFF, 0xFE, 0x7D]), 1007),
                ("close with the reserved code 1005", webSocketFrame(opcode: 0x8, payload: [0x03, 0xED]), 1002),
                ("close with code 999", webSocketFrame(opcode: 0x8, payload: [0x03, 0xE7]), 1002),
                ("close with a one-byte payload", webSocketFrame(opcode: 0x8, payload: [0x03]), 1002),
                ("close with a reason that is not UTF-8", webSocketFrame(opcode: 0x8, payload: [0x03, 0xE8, 0xC3, 0x28]), 1007),
                ("a normal close", webSocketFrame(opcode: 0x8, payload: [0x03, 0xE8]), 1000),
                ("an application close code", webSocketFrame(opcode: 0x8, payload: [0x0F, 0xA0]), 4000),
                ("a continuation with no message begun", webSocketFrame(opcode: 0x0, payload: valid), 1002),
                ("a new message inside an unfinished one", webSocketFrame(opcode: 0x1, payload: [0x7B], fin: false) + webSocketFrame(opcode: 0x1, payload: valid), 1002),
            ]
            for (what, frame, expected) in cases {
                let connection = try RawConnection(port: gateway.port)
                try connection.send("GET /api/ws/rfc-\(UUID().uuidString.prefix(8)) HTTP/1.1\r\nHost: 127.0.0.1:\(gateway.port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                let head = try connection.receiveHead()
                #expect(head.status == 101, "\(what)")
                try connection.send(frame)
                // One close frame, whoever sent it, and nothing after it.
                #expect(try connection.closeCodesUntilTheEnd() == [expected], "\(what)")
            }
        }
    }
}

extension HardeningTests {
    /// A message is buffered whole, and nginx lets one address hold `DRAWING_CONNECTIONS` sockets:
    /// the bytes of messages received and not yet handled are bounded for all sockets together.
    @Test func messagesStillArrivingShareOneBudgetAndASocketBeyondItIsClosedWith1013() async throws {
        // Sketches up to 600 kB make a message of at most 865 kB; all sockets together may be receiving 1 MB.
        try await withGateway("hard-ws-budget", environment: ["MAX_SKETCH_BYTES": "600000", "WS_RECEIVE_BUDGET": "1000000"]) { gateway, _ in
            func open(_ session: String) throws -> RawConnection {
                let connection = try RawConnection(port: gateway.port)
                try connection.send("GET /api/ws/\(session) HTTP/1.1\r\nHost: 127.0.0.1:\(gateway.port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                #expect(try connection.receiveHead().status == 101)
                return connection
            }
            func receiving() async throws -> Double {
                let metrics = try await gateway.get("/metrics").bodyText
                let line = metrics.split(separator: "\n").first { $0.hasPrefix("comfy_gateway_websocket_receiving_bytes ") }
                return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
            }
            // Not JSON: answered with an error once it is whole.
            let frame = webSocketFrame(opcode: 0x1, payload: Array(repeating: UInt8(ascii: "x"), count: 800_000))
            let slow = try open("budget-slow")
            try slow.send(Array(frame[..<600_000]))
            // The first 16 KiB of a message are free.
            try await waitUntil { try await receiving() == 600_000 - 16_384 }

            let greedy = try open("budget-greedy")
            try greedy.send(Array(frame[..<500_000]))
            #expect(try greedy.closeCode() == 1013, "its bytes do not fit beside the first socket's")

            // The first socket was not cut: its message arrives whole and is answered.
            try slow.send(Array(frame[600_000...]))
            #expect(try slow.nextText().contains("messages must be JSON objects"))
            try await waitUntil { try await receiving() == 0 }
            // And what it held is free again.
            let later = try open("budget-later")
            try later.send(frame)
            #expect(try later.nextText().contains("messages must be JSON objects"))
            // Valid JSON of a hundred thousand tiny values is not parsed as a workflow would be.
            let swarm = #"{"type":"sketch_update","sketch_data":"x","pad":["# + Array(repeating: "[0]", count: 100_000).joined(separator: ",") + "]}"
            try later.send(webSocketFrame(opcode: 0x1, payload: Array(swarm.utf8)))
            #expect(try later.nextText().contains("messages must be JSON objects of a few fields"))
            let refusals = try await gateway.get("/metrics").bodyText
            #expect(refusals.contains(#"comfy_gateway_websocket_budget_refusals_total{reason="full"} 1"#), "\(refusals)")
        }
    }
}

/// The processes whose parent is `parent`.
func processChildren(of parent: Int32) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry -> Int32? in
        guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 2 && Int32(fields[1]) == parent ? pid : nil
    }
}

/// The public drawing API, limited per client address by nginx.
@Suite(.serialized)
struct DrawingLimitTests {
    @Test func onePainterAddressIsLimitedInRequestsAndWebSockets() async throws {
        try await withGateway("hard-limits", environment: ["DRAWING_RATE": "2", "DRAWING_CONNECTIONS": "2"]) { gateway, _ in
            var statuses: [Int] = []
            for _ in 0..<12 { statuses.append(try await gateway.get("/api/result/painter-1").status) }
            #expect(statuses.contains(429), "\(statuses)")
            let limited = try RawAnswer(port: gateway.port, request: "GET /api/result/painter-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(limited.status == 429)
            #expect(limited.headers["retry-after"] == "1")
            #expect((try? JSONValue.parse(limited.body))?["error"]?["code"] == "rate_limited")
            // The keyed API is not the drawing API: no per-address limit there.
            #expect(try await gateway.get("/api/styles").status == 200)

            let first = try RawConnection(port: gateway.port)
            let second = try RawConnection(port: gateway.port)
            var held: [RawConnection] = []
            for connection in [first, second] {
                try connection.send("GET /api/ws/held-\(UUID().uuidString.prefix(6)) HTTP/1.1\r\nHost: 127.0.0.1:\(gateway.port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                #expect(try connection.receiveHead().status == 101)
                held.append(connection)
            }
            let third = try upgradeStatus(port: gateway.port, path: "/api/ws/one-too-many", headers: [("Host", "127.0.0.1:\(gateway.port)")])
            #expect(third == 429)
            _ = held
        }
    }

    @Test func theAddressesOfOneIPv6NetworkShareOneLimitBehindAProxy() async throws {
        // A front proxy passes IPv6 clients on: one subscriber's /64 is one client, however its
        // addresses are written.
        try await withGateway("hard-limits-v6", environment: ["DRAWING_RATE": "2", "REAL_IP_FROM": "127.0.0.1"]) { gateway, _ in
            var statuses: [Int] = []
            for index in 0..<12 {
                let address = index % 2 == 0 ? "2001:db8:0:1::\(index + 1)" : "2001:db8:0:1:\(index):ffff:1:2"
                statuses.append(try await gateway.get("/api/result/painter-1", headers: [("X-Forwarded-For", address)]).status)
            }
            #expect(statuses.contains(429), "\(statuses)")
            let neighbour = try await gateway.get("/api/result/painter-1", headers: [("X-Forwarded-For", "2001:db8:0:2::1")])
            #expect(neighbour.status != 429, "another /64 is another client")
        }
    }

    /// Callers without a key take turns for a backend by client too: a /64's addresses are one
    /// caller, so four of them do not all go before a neighbour's one job.
    @Test func theAddressesOfOneIPv6NetworkTakeOneTurnForTheBackend() async throws {
        try await withGateway(
            "hard-turns-v6", emulatorArguments: ["--node-delay-ms", "60"], environment: ["REAL_IP_FROM": "127.0.0.1", "BACKEND_CAPACITY": "1"]
        ) { gateway, _ in
            func submit(_ text: String, from address: String) async throws -> String {
                let answer = try await gateway.post("/api/jobs", json: Workflows.body(Workflows.txt2img(text: text)), headers: [("X-Forwarded-For", address)])
                return try #require(try JSONValue.parse(answer.body)["id"]?.stringValue, "\(answer.status) \(answer.bodyText)")
            }
            var network: [String] = []
            for index in 1...4 { network.append(try await submit("network \(index)", from: "2001:db8:0:1::\(index)")) }
            let neighbour = try await submit("neighbour", from: "2001:db8:0:2::1")
            var finished: [String: String] = [:]
            for id in network + [neighbour] {
                try await waitUntil(timeout: .seconds(60)) { try await gateway.job(id)["status"] == "completed" }
                finished[id] = try await gateway.job(id)["finished_at"]?.stringValue
            }
            let order = (network + [neighbour]).sorted { finished[$0] ?? "" < finished[$1] ?? "" }
            let place = try #require(order.firstIndex(of: neighbour))
            // Turns go to the caller with the fewest running: the network's first job runs, its
            // second may go first on a tie, then the neighbour's. (By address it ran last.)
            #expect(place <= 2, "the neighbour's job ran \(place + 1)th of 5: \(order)")
        }
    }
}
