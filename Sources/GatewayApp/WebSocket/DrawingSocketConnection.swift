import Comfy
import Foundation
import Logging
import Metrics
import NIOCore
import NIOWebSocket

/// One painter's WebSocket: reads sketch updates, writes the session's messages.
struct DrawingSocketConnection: Sendable {
    let sessionID: String
    /// The painter's address as nginx saw it (the last `X-Forwarded-For` entry).
    let clientAddress: String
    /// The API key the session's token was given to (`DRAWING_AUTH`): its sketches stop being
    /// taken once the key is revoked.
    let keyName: String?
    let gate: APIKeyGate
    let sessions: DrawingSessions
    let limits: SketchLimits
    /// What the socket's messages hold of the shared receive budget, until each is handled.
    let receiving: ReceiveBudget.Account
    let logger: Logger

    func serve(_ channel: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>) async {
        if await keyRevoked() {
            await refuse(channel, APIError.revokedSessionKey.message, code: .policyViolation)
            return
        }
        let token: UInt64
        let messages: SessionMessages
        do throws(DrawingError) {
            (token, messages) = try await sessions.subscribe(sessionID, client: clientAddress, owner: keyName)
        } catch {
            // No room for another session: try again later (1013).
            await refuse(channel, error.message, code: error.code == .busy ? .unknown(1013) : .policyViolation)
            return
        }
        let connections = Meter(label: "comfy_gateway_websocket_connections")
        connections.increment()
        defer { connections.decrement() }
        try? await channel.executeThenClose { inbound, outbound in
            let socket = WebSocketSession(inbound: inbound, outbound: outbound, masksFrames: false)
            // Pings and the revocation check of a socket that only listens run on its event loop
            // (`WebSocketKeepAlive`), and the reader is this task: an idle socket keeps one other
            // task suspended, the sender.
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    // Its end (the session's stream finished, or a write failed) ends the socket too.
                    defer { channel.channel.close(promise: nil) }
                    for await message in messages {
                        try await socket.send(message)
                    }
                }
                defer { group.cancelAll() }
                // It ends when the client closes; then the sender stops too.
                for try await message in socket.messages {
                    // Checked at each message (the gate reads keys again after a second):
                    // a socket opened before its key was revoked takes nothing after.
                    if await keyRevoked() {
                        try? await channel.channel.triggerUserOutboundEvent(WebSocketKeepAlive.KeyRevoked()).get()
                        return
                    }
                    let reply = await handle(message, token: token)
                    // Handled: a painter that stops reading our replies holds no budget with them.
                    receiving.messageDone()
                    if let reply { try await socket.send(reply) }
                }
            }
        }
        await sessions.unsubscribe(sessionID, token: token)
    }

    /// Whether the session token's API key (`DRAWING_AUTH`) was revoked since (the gate reads
    /// keys again after a second).
    // Not inlined, nor is `handle`: the reader loop stays suspended for the socket's life, and
    // inlined bodies made the frames every idle socket holds about 1 KiB larger (10,000 idle
    // sockets: 289.2 MiB of app memory, 279.6 MiB without).
    @inline(never)
    private func keyRevoked() async -> Bool {
        guard let keyName else { return false }
        return !(await gate.isActive(name: keyName))
    }

    /// The painter hears why, then the socket closes, instead of staying open unanswered.
    private func refuse(_ channel: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, _ message: String, code: WebSocketErrorCode) async {
        try? await channel.executeThenClose { inbound, outbound in
            let socket = WebSocketSession(inbound: inbound, outbound: outbound, masksFrames: false)
            try await socket.send(.error(message: message))
            try await socket.close(code: code)
            // The close handshake: the painter's reply (at most 2 s) before the connection
            // ends, so the message and the close frame are read, not cut off with the socket.
            try? await withDeadline(.now + .seconds(2), timeout: { CancellationError() }) {
                for try await _ in socket.messages {}
            }
        }
    }

    /// Acts on one client message; returns an error for this client alone, if any.
    @inline(never)
    func handle(_ message: WebSocketMessage, token: UInt64) async -> SessionMessage? {
        guard case .text(let text) = message else { return .error(message: "send JSON text messages, not binary ones") }
        // A message is a flat object: a limit of a few values keeps one made of millions of tiny
        // ones (`[[0],[0],...]`, some 80 bytes of heap per byte) from costing a hundred times
        // what the receive budget counted for it.
        guard let object = (try? JSONValue.parse(text.utf8, maxDepth: 2, maxValues: 64))?.objectValue else {
            return .error(message: "messages must be JSON objects of a few fields")
        }
        switch object["type"]?.stringValue {
        case "sketch_update":
            do throws(DrawingError) {
                guard let data = object["sketch_data"]?.stringValue else {
                    return .error(message: "sketch_update needs sketch_data (base64 or a data URL)")
                }
                let (image, probe) = try limits.check(try Self.decodeSketch(data))
                // A keyed session's sketches are charged to its key's rate here too, as over HTTP.
                if let keyName, let key = await gate.activeKey(named: keyName) {
                    do { try await gate.spend(key) } catch { return .error(message: apiError(for: error).message) }
                }
                let style = object["style"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
                let prompt = object["prompt"]?.stringValue
                let update = SketchUpdate(image: image, mimeType: probe.mimeType, style: style, prompt: prompt, clientAddress: clientAddress, owner: keyName)
                try await sessions.submit(update, to: sessionID)
                return nil
            } catch {
                return .error(message: error.message)
            }
        case "new_seed":
            await sessions.rollSeed(sessionID)
            return nil
        case "previews":
            guard let enabled = object["enabled"]?.boolValue else { return .error(message: "previews needs \"enabled\": true or false") }
            await sessions.setPreviews(sessionID, token: token, enabled: enabled)
            return nil
        case let type?:
            return .error(message: "unknown message type \"\(type.prefix(40))\"")
        case nil:
            return .error(message: "messages need a \"type\"")
        }
    }

    /// Accepts plain base64 or a `data:image/...;base64,` URL.
    static func decodeSketch(_ text: String) throws(DrawingError) -> [UInt8] {
        var payload = Substring(text)
        if payload.hasPrefix("data:") {
            guard let comma = payload.firstIndex(of: ","), payload[..<comma].hasSuffix(";base64") else {
                throw DrawingError(.invalidImage, "sketch_data is a data URL without base64 data")
            }
            payload = payload[payload.index(after: comma)...]
        }
        guard let data = Data(base64Encoded: String(payload)), !data.isEmpty else {
            throw DrawingError(.invalidImage, "sketch_data is not valid base64")
        }
        return Array(data)
    }
}

extension WebSocketSession {
    /// A session message, as the JSON text frame painters read.
    fileprivate func send(_ message: SessionMessage) async throws {
        try await send(.text(String(decoding: message.json.encoded(), as: UTF8.self)))
    }
}
