import Foundation

/// ComfyUI's REST calls (`server.py` routes) to one server, each a plain request: no state.
struct ComfyRESTClient: Sendable {
    let url: ComfyServerURL
    /// The values a `/queue` answer may hold: a hundred and more workflows of the most a caller
    /// may send, where a single answer would otherwise hold the parser's limit for one body.
    static let maxQueueValues = 8_000_000
    let http: CurlHTTPClient

    /// `POST /prompt` with a prompt id of our own, so events can be matched before the answer arrives.
    /// - Parameter sendBy: past this instant the prompt is not sent (`SubmitWindowClosed`).
    /// - Parameter leftoverMark: kept by ComfyUI in the prompt's `extra_data` (`ComfyQueueEntry.leftoverMark`).
    func postPrompt(
        _ job: PromptJob, promptID: String, clientID: String, leftoverMark: String? = nil, sendBy: ContinuousClock.Instant? = nil
    ) async throws -> ComfyPromptReceipt {
        var fields: [String: JSONValue] = [
            "prompt": .object(job.workflow),
            "client_id": .string(clientID),
            "prompt_id": .string(promptID),
        ]
        if let leftoverMark {
            fields["extra_data"] = .object([
                ComfyQueueEntry.leftoverMarkKey: .string(leftoverMark), ComfyQueueEntry.processKey: .string(ComfyQueueEntry.thisProcess),
            ])
        }
        let encoded = JSONValue.object(fields).encoded()
        // Past `sendBy` it is not sent (checked on the thread that sends it, after any wait for one).
        let response = try await call("POST", "/prompt", body: encoded, sendBy: sendBy)
        switch response.status {
        case 200:
            guard let answer = try? JSONValue.parse(response.body), answer["prompt_id"]?.stringValue != nil else {
                throw ComfyError.badResponse(url, "POST /prompt returned no prompt_id")
            }
            return ComfyPromptReceipt(promptID: promptID, nodeErrors: answer["node_errors"]?.objectValue ?? [:])
        case 400:
            let answer = try? JSONValue.parse(response.body)
            // ComfyUI's details name its own folders and source files: callers get them without.
            let comfyError = answer?["error"].map(ServerPathRedaction.redact)
            var error = ComfyError(
                code: .workflowInvalid,
                message: ServerPathRedaction.redact(comfyError?["message"]?.stringValue ?? "ComfyUI rejected the workflow"),
                backend: url.description
            )
            error.comfyError = comfyError
            error.nodeErrors = ServerPathRedaction.redact(answer?["node_errors"] ?? .object([:]))
            throw error
        default:
            throw ComfyError.badResponse(url, "POST /prompt returned HTTP \(response.status)", serverFault: true)
        }
    }

    /// `POST /upload/image` with `overwrite`, so a session's sketch always lands under one name.
    func upload(_ upload: PromptUpload) async throws {
        let boundary = "gateway-\(UUID().uuidString)"
        var body = [UInt8]()
        func field(_ name: String, _ value: String) {
            body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
        }
        body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"image\"; filename=\"\(upload.filename)\"\r\nContent-Type: \(upload.mimeType)\r\n\r\n".utf8)
        body += upload.bytes
        body += Array("\r\n".utf8)
        field("overwrite", "true")
        field("type", "input")
        field("subfolder", upload.subfolder)
        body += Array("--\(boundary)--\r\n".utf8)
        let request = CurlRequest(
            method: "POST",
            url: url.http("/upload/image"),
            headers: [("Content-Type", "multipart/form-data; boundary=\(boundary)")],
            body: body
        )
        let response: CurlResponse
        do {
            response = try await http.execute(request)
        } catch let error as CurlError {
            throw error.kind == .cancelled ? ComfyError.cancelled : serverFault(error)
        }
        if (400..<500).contains(response.status) {
            // This image's problem (too large for ComfyUI, not one it reads): no other backend's answer differs.
            throw ComfyError(code: .workflowInvalid, message: "ComfyUI refused the input image (POST /upload/image returned HTTP \(response.status))", backend: url.description)
        }
        guard response.status == 200, let answer = try? JSONValue.parse(response.body) else {
            throw ComfyError.badResponse(url, "POST /upload/image returned HTTP \(response.status)", serverFault: true)
        }
        // With overwrite ComfyUI keeps the name; anything else would feed LoadImage the wrong file.
        guard answer["name"]?.stringValue == upload.filename, answer["subfolder"]?.stringValue == upload.subfolder else {
            throw ComfyError.badResponse(url, "POST /upload/image stored the sketch under another name")
        }
    }

    /// `GET /history/{id}`: `nil` when ComfyUI does not know the prompt.
    func history(_ promptID: String) async throws -> ComfyHistoryEntry? {
        let response = try await call("GET", "/history/\(promptID)")
        guard response.status == 200 else { throw ComfyError.badResponse(url, "GET /history returned HTTP \(response.status)") }
        return ComfyHistoryEntry.decode(response.body, promptID: promptID)
    }

    /// The prompt ids in ComfyUI's queue: running, and waiting.
    func queue(timeout: Duration = .seconds(30)) async throws -> (running: [String], pending: [String]) {
        let entries = try await queueEntries(timeout: timeout)
        return (entries.filter(\.isRunning).map(\.promptID), entries.filter { !$0.isRunning }.map(\.promptID))
    }

    /// ComfyUI's queue, each prompt with its workflow.
    func queueEntries(timeout: Duration = .seconds(30)) async throws -> [ComfyQueueEntry] {
        let response = try await call("GET", "/queue", timeout: timeout)
        // Every queued workflow quoted, ours (at most `GenerateRequest.maxWorkflowValues` each) and other clients'.
        guard response.status == 200, let queue = try? JSONValue.parse(response.body, maxValues: Self.maxQueueValues) else {
            throw ComfyError.badResponse(url, "GET /queue returned HTTP \(response.status)")
        }
        return ComfyQueueEntry.decode(queue)
    }

    /// Whether the prompt is running or waiting in ComfyUI's queue.
    func isQueued(_ promptID: String) async throws -> Bool {
        let queue = try await queue()
        return queue.running.contains(promptID) || queue.pending.contains(promptID)
    }

    /// `GET /system_stats`, the light probe.
    /// The backend's model files in the gateway's folders; `nil` from a ComfyUI without `/models`.
    func models() async throws -> ModelCatalogue? {
        let types = try await call("GET", "/models", timeout: .seconds(5))
        guard types.status == 200, let known = try? JSONValue.parse(types.body).arrayValue?.compactMap(\.stringValue) else { return nil }
        var folders: [String: Set<String>] = [:]
        for folder in ModelReference.folders where known.contains(folder) {
            let response = try await call("GET", "/models/\(folder)", timeout: .seconds(10))
            guard response.status == 200, let names = try? JSONValue.parse(response.body).arrayValue else { continue }
            folders[folder] = Set(names.compactMap(\.stringValue))
        }
        return ModelCatalogue(folders: folders)
    }

    func probe() async throws {
        let response = try await call("GET", "/system_stats", timeout: .seconds(3))
        guard response.status == 200 else { throw ComfyError.badResponse(url, "GET /system_stats returned HTTP \(response.status)") }
    }

    /// `GET /view` for a file a node wrote.
    func view(_ image: ComfyImageReference) async throws -> (bytes: [UInt8], mimeType: String) {
        var components = URLComponents()
        components.queryItems = [
            URLQueryItem(name: "filename", value: image.filename),
            URLQueryItem(name: "subfolder", value: image.subfolder),
            URLQueryItem(name: "type", value: image.type),
        ]
        // aiohttp reads `+` in a query as a space: a file name with `+` needs it encoded.
        let query = (components.percentEncodedQuery ?? "").replacingOccurrences(of: "+", with: "%2B")
        // A large file may take long on a slow link: its timeout is this job's, not the backend's fault.
        let response = try await call("GET", "/view?" + query, body: nil, timeoutIsServerFault: false)
        guard response.status == 200 else {
            // A missing file is this job's problem, not the backend's: no reason to run it elsewhere.
            if (400..<500).contains(response.status) {
                throw ComfyError(code: .noImage, message: "ComfyUI has no file \(image.filename) (GET /view returned HTTP \(response.status))", backend: url.description)
            }
            throw ComfyError.badResponse(url, "GET /view of \(image.filename) returned HTTP \(response.status)", serverFault: true)
        }
        return (response.body, response.header("Content-Type").map { String($0.prefix { $0 != ";" }) } ?? sniffMimeType(response.body))
    }

    /// Removes the prompt from ComfyUI's queue and interrupts it if it runs: only this prompt,
    /// never a global interrupt that would kill someone else's job.
    func cancel(_ promptID: String) async {
        await removeFromQueue([promptID])
        _ = try? await call("POST", "/interrupt", json: .object(["prompt_id": .string(promptID)]))
    }

    /// Removes waiting prompts from the queue; whatever runs is left alone.
    func removeFromQueue(_ promptIDs: [String]) async {
        guard !promptIDs.isEmpty else { return }
        _ = try? await call("POST", "/queue", json: .object(["delete": .array(promptIDs.map(JSONValue.string))]))
    }

    /// Forgets finished prompts' history entries so ComfyUI's memory does not grow with our traffic.
    func deleteHistory(_ promptIDs: [String]) async {
        _ = try? await call("POST", "/history", json: .object(["delete": .array(promptIDs.map(JSONValue.string))]))
    }

    func call(_ method: String, _ path: String, json: JSONValue? = nil, timeout: Duration = .seconds(30)) async throws -> CurlResponse {
        try await call(method, path, body: json?.encoded(), timeout: timeout)
    }

    /// - Parameter body: encoded JSON.
    /// - Parameter timeoutIsServerFault: whether no answer in time counts against the backend.
    func call(
        _ method: String, _ path: String, body: [UInt8]?, timeout: Duration = .seconds(30), sendBy: ContinuousClock.Instant? = nil,
        timeoutIsServerFault: Bool = true
    ) async throws -> CurlResponse {
        var request = CurlRequest(
            method: method,
            url: url.http(path),
            headers: body == nil ? [] : [("Content-Type", "application/json")],
            body: body,
            timeout: timeout
        )
        request.sendBy = sendBy
        do {
            return try await http.execute(request)
        } catch let error as CurlError where error.kind == .cancelled {
            throw ComfyError.cancelled
        } catch let error as CurlError where error.kind == .tooLate {
            throw SubmitWindowClosed()
        } catch let error as CurlError where error.kind == .responseTooLarge {
            // What this job made (a file, a history entry) is too large: no other backend's answer differs.
            throw ComfyError(code: .noImage, message: "ComfyUI at \(url) answered \(method) \(path.prefix { $0 != "?" }) with more than the gateway reads", backend: url.description)
        } catch let error as CurlError {
            var failure = serverFault(error)
            failure.isServerFault = error.kind != .timedOut || timeoutIsServerFault
            throw failure
        }
    }

    /// A call that got no answer: ComfyUI's fault, as far as the gateway can tell.
    private func serverFault(_ error: CurlError) -> ComfyError {
        var failure = ComfyError.unavailable(url, error.message)
        failure.isServerFault = true
        return failure
    }
}
