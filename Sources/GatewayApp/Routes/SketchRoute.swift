import Comfy
import Foundation

/// The drawing API's HTTP side: `GET /api/styles`, `POST /api/sketch`, `GET /api/result/{id}`.
struct SketchRoute: Sendable {
    let sessions: DrawingSessions
    let styles: StyleLibrary
    let limits: SketchLimits
    /// With `DRAWING_AUTH`: the session's socket and result need its token.
    let tokens: SessionTokens?
    /// With `DRAWING_AUTH`: each sketch is charged to its key's rate (`--rate`), as a job is.
    let gate: APIKeyGate
    /// `OUTPUT_DIR`, where nginx finds the results it hands over.
    let outputDirectory: String
    /// Whether results are in a bucket too (S3, OSS), whose URL serves one this host's
    /// `OUTPUT_DIR` lacks.
    let bucketStore: Bool

    /// The style list, made again only when the names changed.
    let listed = ResponseMemo<[String]>()

    func listStyles(_ request: GatewayRequest) async -> GatewayResponse {
        listed.response(for: await styles.names()) { names in .json(.object(["styles": .array(names.map(JSONValue.string))])) }
    }

    func upload(_ request: GatewayRequest) async throws -> GatewayResponse {
        let form = try MultipartForm(body: request.body, contentType: request.header("content-type"))
        guard let file = form.part("file"), !file.body.isEmpty else {
            throw APIError(.invalidRequest, "the form has no file field with the sketch")
        }
        let sessionID = form.text("session_id").flatMap { $0.isEmpty ? nil : $0 } ?? UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let style = form.text("style").flatMap { $0.isEmpty ? nil : $0 }
        let prompt = form.text("prompt")
        let checked: (image: [UInt8], probe: ImageProbe)
        do throws(DrawingError) { checked = try limits.check(file.body) } catch { throw APIError(error) }
        // With DRAWING_AUTH a session is its first key's: another key gets no token for it.
        var owner: String?
        if tokens != nil {
            // AUTH=auto before the first key: the gate asks for none, but a token must name one,
            // or it would go to whoever names a session first.
            guard let key = request.apiKey else {
                throw APIError(.unauthorized, "DRAWING_AUTH: the drawing API needs an API key, and none exists yet (make keys ARGS=\"create NAME\")")
            }
            try await gate.spend(key)
            owner = key.name
        }
        let update = SketchUpdate(
            image: checked.image, mimeType: checked.probe.mimeType, style: style, prompt: prompt, clientAddress: request.remoteAddress, owner: owner
        )
        do throws(DrawingError) { try await sessions.submit(update, to: sessionID) } catch { throw APIError(error) }
        var answer: [String: JSONValue] = [
            "session_id": .string(sessionID),
            "status": "uploaded",
            "message": "Sketch uploaded successfully",
            "websocket_url": .string("/api/ws/\(sessionID)"),
            "result_url": .string("/api/result/\(sessionID)"),
        ]
        if let tokens, let owner {
            let token = tokens.token(for: sessionID, keyName: owner)
            answer["session_token"] = .string(token)
            answer["websocket_url"] = .string("/api/ws/\(sessionID)?token=\(token)")
            answer["result_url"] = .string("/api/result/\(sessionID)?token=\(token)")
        }
        return .json(.object(answer))
    }

    /// The latest finished image; nginx sends the bytes (`X-Accel-Redirect`), so no Content-Type
    /// here. A bucket's copy is sent to instead when this host has none: it went with
    /// `OUTPUT_RETENTION`, or another instance with its own `OUTPUT_DIR` made it.
    func result(_ request: GatewayRequest) async throws -> GatewayResponse {
        let sessionID = String(request.path.dropFirst("/api/result/".count))
        do throws(DrawingError) {
            try DrawingError.checkSessionID(sessionID)
        } catch {
            throw APIError(error)
        }
        var owner: String?
        if let tokens {
            guard let keyName = tokens.verify(request.queryValue("token"), for: sessionID) else {
                throw APIError(.unauthorized, "this session's result needs its session_token (DRAWING_AUTH): use the result_url /api/sketch answered")
            }
            guard await gate.isActive(name: keyName) else { throw APIError.revokedSessionKey }
            owner = keyName
        }
        let found: StoredImage?
        do throws(DrawingError) { found = try await sessions.latestResult(sessionID, owner: owner) } catch { throw APIError(error) }
        guard let image = found else {
            throw APIError(.notFound, "session \(sessionID) has no result yet")
        }
        if bucketStore, image.url.hasPrefix("https://") || image.url.hasPrefix("http://"), image.expiresAt.map({ $0 > Date() }) ?? true,
            !FileManager.default.fileExists(atPath: "\(outputDirectory)/\(image.filename)") {
            return GatewayResponse(status: 302, headers: [("Location", image.url), ("Cache-Control", "private, no-store")])
        }
        return GatewayResponse(status: 200, headers: [("X-Accel-Redirect", "/internal/output/\(image.filename)")])
    }
}

extension APIError {
    /// A session token whose API key was revoked since it was given.
    static let revokedSessionKey = APIError(.unauthorized, "the API key this session's token was given to is revoked")

    /// The API's view of a refused drawing request.
    init(_ error: DrawingError) {
        switch error.code {
        case .invalidSessionID, .unknownStyle, .invalidImage, .invalidRequest: self.init(.invalidRequest, error.message)
        case .noStyles: self.init(.notFound, error.message)
        case .notYours: self.init(.forbidden, error.message)
        case .busy:
            self.init(.busy, error.message)
            headers.append(("Retry-After", "5"))
        }
    }
}
