import Comfy
import NIOCore
import NIOHTTP1

/// `GET /api/jobs/{id}/events`: the job's progress and its end as Server-Sent Events
/// (`progress`, then one of `completed`, `failed`, `cancelled`), with a comment line as a
/// heartbeat so that proxies keep the idle stream open. Served on the streaming listener,
/// not FastCGI: a stream holds no FastCGI thread.
struct JobEventStream: Sendable {
    let runner: JobRunner
    let gate: APIKeyGate
    let heartbeat: Duration

    /// The job id of an events path, if it is one.
    static func jobID(of uri: String) -> String? {
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        guard path.hasPrefix("/api/jobs/"), path.hasSuffix("/events") else { return nil }
        let id = String(path.dropFirst("/api/jobs/".count).dropLast("/events".count))
        return JobRecord.isValidID(id) ? id : nil
    }

    func serve(_ id: String, authorization: String?, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        let watched: (JobRecord, AsyncStream<JobUpdate>?)?
        let key: APIKey?
        do {
            key = try await gate.authenticate(authorization: authorization)
            watched = try await runner.watch(id)
        } catch {
            try await outbound.writeJSONError(apiError(for: error))
            return
        }
        // Another key's job is as unknown as one that does not exist.
        guard let (record, updates) = watched, key == nil || record.keyName == key?.name else {
            try await outbound.writeJSONError(APIError(.notFound, "no job with id \"\(id)\""))
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Accel-Buffering", value: "no")
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        guard let updates else {
            try await write(event: record.status.rawValue, record.json(), to: outbound)
            try await outbound.write(.end(nil))
            return
        }
        // A job still waiting for its turn says so; progress after it comes from a running one.
        try await write(event: "progress", progress(id, record.progress, status: record.status == .queued ? .queued : .running), to: outbound)
        let heartbeat = self.heartbeat
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while true {
                    try await Task.sleep(for: heartbeat)
                    try await outbound.write(.body(.byteBuffer(ByteBuffer(string: ": heartbeat\n\n"))))
                }
            }
            group.addTask {
                for await update in updates {
                    switch update {
                    case .progress(let value):
                        try await write(event: "progress", progress(id, value), to: outbound)
                    case .finished(let final, _):
                        try await write(event: final.status.rawValue, final.json(), to: outbound)
                    case .unstored(let error):
                        try await write(event: "error", apiError(for: error).body, to: outbound)
                    case .stopped(let error):
                        try await write(event: "error", apiError(for: error).body, to: outbound)
                    }
                }
            }
            // The job's end (or the client gone, which fails a write) ends both.
            _ = try await group.next()
            group.cancelAll()
        }
        try await outbound.write(.end(nil))
    }

    private func progress(_ id: String, _ value: Double, status: JobStatus = .running) -> JSONValue {
        .object(["id": .string(id), "status": .string(status.rawValue), "progress": .number((value * 1000).rounded() / 1000)])
    }

    private func write(event: String, _ data: JSONValue, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var text = "event: \(event)\ndata: "
        text += String(decoding: data.encoded(), as: UTF8.self)
        text += "\n\n"
        try await outbound.write(.body(.byteBuffer(ByteBuffer(string: text))))
    }
}
