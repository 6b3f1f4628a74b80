import Comfy
import Foundation
import Testing

/// `DRAWING_AUTH=true`: the drawing API needs a key, and its WebSocket and result the session's
/// signed token, through real nginx and the app's WebSocket listener.
@Suite(.serialized)
struct DrawingAuthTests {
    /// A gateway with `DRAWING_AUTH`, a style, and a key made for each `keys create` argument
    /// list, once the gate reads them; `body` gets their secrets in order.
    func withKeyedDrawing(
        _ label: String, keys: [[String]], environment: [String: String] = [:], _ body: (Gateway, [String]) async throws -> Void
    ) async throws {
        try await withGateway(label, environment: environment.merging(["DRAWING_AUTH": "true"]) { $1 }) { gateway, _ in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            let secrets = try keys.map { try KeyTests.createKey(gateway, $0) }
            try await Task.sleep(for: .milliseconds(1200))  // the gate reads new keys within a second
            try await body(gateway, secrets)
        }
    }

    /// `POST /api/sketch` of a fresh PNG for `session`, with the key `secret`.
    func sketch(_ gateway: Gateway, _ session: String, by secret: String, seed: Int) async throws -> CurlResponse {
        let form = sketchForm(file: Sketches.png(seed: seed), fields: ["session_id": session])
        return try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType, headers: KeyTests.bearer(secret))
    }

    @Test func theSketchNeedsAKeyTheSocketAndResultTheSessionsTokenAndTheAccessLogQuotesNeither() async throws {
        try await withKeyedDrawing("drawing-auth", keys: [["painter"]]) { gateway, secrets in
            let secret = secrets[0]
            let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": "authed"])
            let anonymous = try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType)
            #expect(anonymous.status == 401)
            let created = try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType, headers: KeyTests.bearer(secret))
            #expect(created.status == 200, "\(created.bodyText)")
            let answer = try JSONValue.parse(created.body)
            let token = try #require(answer["session_token"]?.stringValue)
            let socket = try #require(answer["websocket_url"]?.stringValue)
            #expect(socket == "/api/ws/authed?token=\(token)")
            let host = [("Host", "127.0.0.1:\(gateway.port)")]
            #expect(try upgradeStatus(port: gateway.port, path: "/api/ws/authed", headers: host) == 401)
            #expect(try upgradeStatus(port: gateway.port, path: "/api/ws/someone-else?token=\(token)", headers: host) == 401)
            let forged = String(token.dropLast()) + (token.hasSuffix("A") ? "B" : "A")
            #expect(try upgradeStatus(port: gateway.port, path: "/api/ws/authed?token=\(forged)", headers: host) == 401)
            let expired = "1000000000." + token.split(separator: ".", maxSplits: 1)[1]
            #expect(try upgradeStatus(port: gateway.port, path: "/api/ws/authed?token=\(expired)", headers: host) == 401)

            let client = try await DrawingClient.connect(port: gateway.port, path: socket)
            await client.sendSketch(Sketches.png(seed: 2))
            _ = try await client.next(status: "completed")
            await client.close()
            #expect(try await gateway.get("/api/result/authed").status == 401)
            let result = try await gateway.get(try #require(answer["result_url"]?.stringValue))
            #expect(result.status == 200)
            #expect(emulatorMetadata(ofPNG: result.body)?["texts"]?.arrayValue?.first == "a house on a hill")
            // nginx's access log names the requests, not the token that opened them. (It writes a
            // request's line once done with it, which may be after the client has the answer.)
            // Nor a key a client sent as Basic credentials (nginx's combined format logs the user).
            let basic = "Basic " + Data("cgw_sent_as_basic_user:".utf8).base64EncodedString()
            #expect(try await gateway.get("/api/usage", headers: [("Authorization", basic)]).status == 401)
            let logPath = "\(gateway.runDirectory)/logs/access.log"
            try await waitUntil {
                let text = try String(contentsOfFile: logPath, encoding: .utf8)
                return text.contains("\"GET /api/result/authed HTTP/1.1\" 200") && text.contains("\"GET /api/usage HTTP/1.1\" 401")
            }
            let accessLog = try String(contentsOfFile: logPath, encoding: .utf8)
            #expect(accessLog.contains("GET /api/ws/authed HTTP/1.1"), "\(accessLog)")
            #expect(!accessLog.contains(token.split(separator: ".")[1]), "\(accessLog)")
            #expect(!accessLog.contains("cgw_sent_as_basic_user"), "\(accessLog)")
        }
    }

    @Test func whileTheAppIsDownNginxsErrorLogQuotesNoSessionToken() async throws {
        try await withKeyedDrawing("drawing-token-error-log", keys: [["painter"]]) { gateway, secrets in
            let created = try await sketch(gateway, "down", by: secrets[0], seed: 1)
            let answer = try JSONValue.parse(created.body)
            let token = try #require(answer["session_token"]?.stringValue)
            let socketPath = try #require(answer["websocket_url"]?.stringValue)
            let resultPath = try #require(answer["result_url"]?.stringValue)
            #expect(socketPath.contains(token) && resultPath.contains(token))
            // A result whose file is gone (retention) is nginx's 404, without a line.
            try await waitUntil { try await gateway.get(resultPath).status == 200 }
            for file in try gateway.storedFiles() { try FileManager.default.removeItem(atPath: "\(gateway.outputDirectory)/\(file)") }
            #expect(try await gateway.get(resultPath).status == 404)
            // The supervisor is held still: the app stays down while nginx is asked.
            let app = try String(contentsOfFile: "\(gateway.runDirectory)/app.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            kill(gateway.app.pid, SIGSTOP)
            kill(try #require(Int32(app)), SIGKILL)
            try await Task.sleep(for: .milliseconds(200))
            let host = [("Host", "127.0.0.1:\(gateway.port)")]
            // Its sockets refuse (nginx logs that at error level), then they are not there (crit),
            // as while the supervisor starts it again.
            for socketsGone in [false, true] {
                if socketsGone {
                    for socket in ["fcgi.sock", "ws.sock"] { unlink("\(gateway.runDirectory)/\(socket)") }
                }
                #expect(try upgradeStatus(port: gateway.port, path: socketPath, headers: host) >= 500)
                #expect(try await gateway.get(resultPath).status == 503)
            }
            // Asked of an API path, nginx logs the failed connection too: its line is the mark
            // that the lines of the requests before would be written by now.
            #expect(try await gateway.get("/api/styles?marker=1").status == 503)
            let errorLog = "\(gateway.runDirectory)/logs/error.log"
            try await waitUntil { try String(contentsOfFile: errorLog, encoding: .utf8).contains("marker=1") }
            kill(gateway.app.pid, SIGCONT)
            let lines = try String(contentsOfFile: errorLog, encoding: .utf8)
            #expect(!lines.contains(token.split(separator: ".")[1]), "\(lines)")
            try await gateway.waitUntilHealthy()
        }
    }

    @Test func aSessionBelongsToTheKeyThatStartedItAndAnotherKeyGetsNoTokenForIt() async throws {
        try await withKeyedDrawing("drawing-owner", keys: [["alice"], ["mallory"]]) { gateway, secrets in
            let (alice, mallory) = (secrets[0], secrets[1])
            #expect(try await sketch(gateway, "alices", by: alice, seed: 1).status == 200)
            let taken = try await sketch(gateway, "alices", by: mallory, seed: 2)
            #expect(taken.status == 403, "\(taken.bodyText)")
            let error = try JSONValue.parse(taken.body)["error"]
            #expect(error?["code"] == "forbidden")
            #expect(!taken.bodyText.contains("session_token"))
            #expect(try await sketch(gateway, "alices", by: alice, seed: 3).status == 200, "its own key goes on")
            #expect(try await sketch(gateway, "malloys", by: mallory, seed: 4).status == 200, "a session of one's own")
        }
    }

    @Test func revokingAKeyEndsItsSessionTokensAndItsOpenSocketsTakeNoMoreSketches() async throws {
        // "staying": keys stay needed once "leaving" is revoked.
        try await withKeyedDrawing("drawing-revoke", keys: [["leaving"], ["staying"]]) { gateway, secrets in
            let secret = secrets[0]
            let created = try await sketch(gateway, "revoked", by: secret, seed: 1)
            #expect(created.status == 200, "\(created.bodyText)")
            let answer = try JSONValue.parse(created.body)
            let socketPath = try #require(answer["websocket_url"]?.stringValue)
            let resultPath = try #require(answer["result_url"]?.stringValue)
            let painter = try await DrawingClient.connect(port: gateway.port, path: socketPath)
            await painter.sendSketch(Sketches.png(seed: 5))
            _ = try await painter.next(status: "completed")
            #expect(try await gateway.get(resultPath).status == 200)

            #expect(try KeyTests.keys(gateway, ["revoke", "leaving"]).status == 0)
            try await Task.sleep(for: .milliseconds(1200))
            let result = try await gateway.get(resultPath)
            #expect(result.status == 401)
            #expect(try JSONValue.parse(result.body)["error"]?["message"]?.stringValue?.contains("revoked") == true, "\(result.bodyText)")
            // A new socket with the token hears why, and is closed.
            let late = try await DrawingClient.connect(port: gateway.port, path: socketPath)
            let closed = try await late.next(status: "error")
            #expect(closed["message"]?.stringValue?.contains("revoked") == true, "\(closed)")
            await late.close()
            // So does one opened before the revocation, at its next sketch.
            await painter.sendSketch(Sketches.png(seed: 2))
            let refused = try await painter.next(status: "error")
            #expect(refused["message"]?.stringValue?.contains("revoked") == true, "\(refused)")
            await painter.close()
        }
    }

    @Test func aSocketThatOnlyListensIsPingedAndClosedAtItsNextPingOnceItsKeyIsRevoked() async throws {
        // Slow enough pings that one socket's are answered while the test reads the other's.
        try await withKeyedDrawing("drawing-revoke-listener", keys: [["leaving"], ["staying"]], environment: ["WS_PING_INTERVAL": "1500ms"]) { gateway, secrets in
            func listen(by secret: String, _ session: String) async throws -> RawConnection {
                let created = try await sketch(gateway, session, by: secret, seed: 1)
                let socketPath = try #require(try JSONValue.parse(created.body)["websocket_url"]?.stringValue)
                let listener = try RawConnection(port: gateway.port)
                try listener.send("GET \(socketPath) HTTP/1.1\r\nHost: 127.0.0.1:\(gateway.port)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                #expect(try listener.receiveHead().status == 101)
                return listener
            }
            /// Frames up to and with the close frame, or the next `count` pings, each answered as a
            /// browser does (an unanswered ping ends the connection).
            func frames(of listener: RawConnection, pings count: Int = .max) throws -> [(opcode: UInt8, payload: [UInt8])] {
                var frames: [(opcode: UInt8, payload: [UInt8])] = []
                while frames.count < 100, frames.last?.opcode != 0x8, frames.filter({ $0.opcode == 0x9 }).count < count {
                    let frame = try listener.nextFrame()
                    if frame.opcode == 0x9 { try listener.send(webSocketFrame(opcode: 0xA, payload: frame.payload)) }
                    frames.append(frame)
                }
                return frames
            }
            let leaving = try await listen(by: secrets[0], "listened")
            let staying = try await listen(by: secrets[1], "stays")
            // Silent, each is pinged (nginx would drop it otherwise), between its sketch's messages.
            var seen: [[UInt8]] = [[], []]
            for _ in 0..<3 {
                for (index, listener) in [leaving, staying].enumerated() { seen[index] += try frames(of: listener, pings: 1).map(\.opcode) }
            }
            for opcodes in seen {
                #expect(opcodes.filter { $0 == 0x9 }.count == 3 && opcodes.allSatisfy { $0 == 0x9 || $0 == 0x1 }, "\(opcodes)")
            }

            #expect(try KeyTests.keys(gateway, ["revoke", "leaving"]).status == 0)
            // It never sends: it hears why at a keep-alive tick, then the close (pings until then).
            let told = try frames(of: leaving).filter { $0.opcode != 0x9 }
            let texts = told.filter { $0.opcode == 0x1 }.map { String(decoding: $0.payload, as: UTF8.self) }
            #expect(texts.last?.contains(#""status":"error""#) == true && texts.last?.contains("revoked") == true, "\(texts)")
            #expect(told.last?.opcode == 0x8 && told.last?.payload.prefix(2).elementsEqual([0x03, 0xF0]) == true, "closed with 1008")
            #expect(throws: (any Error).self, "and the connection ends") { try leaving.nextFrame() }
            // The other key's socket goes on being pinged, told nothing.
            let after = try frames(of: staying, pings: 3)
            #expect(after.filter { $0.opcode == 0x9 }.count == 3 && !after.contains { $0.opcode == 0x8 }, "\(after.map(\.opcode))")
            #expect(!after.contains { String(decoding: $0.payload, as: UTF8.self).contains("revoked") })
        }
    }

    @Test func beforeTheFirstKeyExistsTheSketchIsRefusedAndNoTokenIsGiven() async throws {
        try await withGateway("drawing-no-key", environment: ["DRAWING_AUTH": "true"]) { gateway, emulator in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": "someones"])
            let refused = try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType)
            #expect(refused.status == 401, "\(refused.bodyText)")
            #expect(try JSONValue.parse(refused.body)["error"]?["code"] == "unauthorized")
            #expect(refused.bodyText.contains("make keys"))
            #expect(!refused.bodyText.contains("session_token"))
            #expect(try await emulator.stats()["prompts_received"] == 0)
        }
    }

    @Test func aResultURLOfASessionAnotherKeyMadeAgainIsRefused() async throws {
        try await withKeyedDrawing("drawing-result-owner", keys: [["alice"], ["mallory"]]) { gateway, secrets in
            let (alice, mallory) = (secrets[0], secrets[1])
            let alices = try await sketch(gateway, "swapped", by: alice, seed: 1)
            let alicesResult = try #require(try JSONValue.parse(alices.body)["result_url"]?.stringValue)
            try await waitUntil { try await gateway.get(alicesResult).status == 200 }
            // The app restarts and forgets the session; mallory then makes one of the same id.
            kill(try gateway.appPID(), SIGKILL)
            try await Task.sleep(for: .milliseconds(300))
            try await gateway.waitUntilHealthy()
            let mallorys = try await sketch(gateway, "swapped", by: mallory, seed: 2)
            #expect(mallorys.status == 200, "\(mallorys.bodyText)")
            let mallorysResult = try #require(try JSONValue.parse(mallorys.body)["result_url"]?.stringValue)
            try await waitUntil { try await gateway.get(mallorysResult).status == 200 }
            // Alice's token is still signed for this id, but the session is mallory's now.
            let refused = try await gateway.get(alicesResult)
            #expect(refused.status == 403, "\(refused.bodyText)")
            #expect(try JSONValue.parse(refused.body)["error"]?["code"] == "forbidden")
        }
    }

    @Test func aSessionMadeAgainByItsTokensSocketAfterARestartIsStillItsKeys() async throws {
        try await withKeyedDrawing("drawing-owner-restart", keys: [["alice"], ["mallory"]]) { gateway, secrets in
            let (alice, mallory) = (secrets[0], secrets[1])
            let created = try await sketch(gateway, "kept", by: alice, seed: 1)
            let socketPath = try #require(try JSONValue.parse(created.body)["websocket_url"]?.stringValue)
            // The app dies and comes back (sessions live in its memory; the token outlives it).
            kill(try gateway.appPID(), SIGKILL)
            try await Task.sleep(for: .milliseconds(300))
            try await gateway.waitUntilHealthy()
            let painter = try await DrawingClient.connect(port: gateway.port, path: socketPath)
            await painter.sendSketch(Sketches.png(seed: 2))
            _ = try await painter.next(status: "completed")
            // The session the socket made again is alice's: mallory gets no token for it.
            let refused = try await sketch(gateway, "kept", by: mallory, seed: 3)
            #expect(refused.status == 403, "\(refused.bodyText)")
            await painter.close()
        }
    }

    @Test func sketchesOverTheSocketAreChargedToTheKeysRateToo() async throws {
        try await withKeyedDrawing("drawing-rate-socket", keys: [["socket-painter", "--rate", "2/min"]]) { gateway, secrets in
            let secret = secrets[0]
            let created = try await sketch(gateway, "rated-socket", by: secret, seed: 1)
            let socketPath = try #require(try JSONValue.parse(created.body)["websocket_url"]?.stringValue)
            let painter = try await DrawingClient.connect(port: gateway.port, path: socketPath)
            await painter.sendSketch(Sketches.png(seed: 2))  // the second of 2 a minute
            _ = try await painter.next(status: "completed")
            await painter.sendSketch(Sketches.png(seed: 3))  // the third
            let refused = try await painter.next(status: "error")
            #expect(refused["message"]?.stringValue?.contains("2 jobs a minute") == true, "\(refused)")
            await painter.close()
        }
    }

    @Test func sketchesAreChargedToTheKeysRateAsJobsAre() async throws {
        try await withKeyedDrawing("drawing-rate", keys: [["slow-painter", "--rate", "2/min"]]) { gateway, secrets in
            let secret = secrets[0]
            var statuses: [Int] = []
            for seed in 1...3 {
                let response = try await sketch(gateway, "rated", by: secret, seed: seed)
                statuses.append(response.status)
                if response.status == 429 { #expect(try JSONValue.parse(response.body)["error"]?["code"] == "rate_limited") }
            }
            #expect(statuses == [200, 200, 429])
        }
    }

    @Test func withoutDrawingAuthTheDrawingAPINeedsNoToken() async throws {
        try await withGateway("drawing-open") { gateway, _ in
            try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
            let form = sketchForm(file: Sketches.png(seed: 1), fields: ["session_id": "open"])
            let created = try await gateway.post("/api/sketch", body: form.body, contentType: form.contentType)
            let answer = try JSONValue.parse(created.body)
            #expect(answer["websocket_url"] == "/api/ws/open")
            #expect(answer["session_token"] == nil)
        }
    }
}
