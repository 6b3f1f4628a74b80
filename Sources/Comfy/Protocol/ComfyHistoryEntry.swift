/// One prompt's record from `GET /history/{prompt_id}`: how it ended and the files it wrote.
public struct ComfyHistoryEntry: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        case success
        case failed(ComfyExecutionFailure)
        case interrupted
        case unknown
    }

    public var outcome: Outcome
    /// Output node id → images it wrote. Empty for SaveImageWebsocket-only prompts.
    public var images: [String: [ComfyImageReference]]
    /// How long it ran, by the timestamps of ComfyUI's `execution_start` and of its end message:
    /// the GPU time of a prompt whose events went to another socket.
    public var executionMilliseconds: Int?

    /// Decodes the body of `/history/{id}`; `nil` when ComfyUI does not know the prompt (`{}`).
    public static func decode(_ body: [UInt8], promptID: String) -> ComfyHistoryEntry? {
        guard let entry = (try? JSONValue.parse(body))?[promptID] else { return nil }
        var images: [String: [ComfyImageReference]] = [:]
        for (node, output) in entry["outputs"]?.objectValue ?? [:] {
            images[node] = (output["images"]?.arrayValue ?? []).compactMap { image in
                image["filename"]?.stringValue.map {
                    ComfyImageReference(
                        filename: $0,
                        subfolder: image["subfolder"]?.stringValue ?? "",
                        type: image["type"]?.stringValue ?? "output"
                    )
                }
            }
        }
        let status = entry["status"]
        let messages = status?["messages"]?.arrayValue ?? []
        var outcome = Outcome.unknown
        if status?["status_str"]?.stringValue == "success" {
            outcome = .success
        } else {
            for message in messages {
                guard let pair = message.arrayValue, pair.count == 2, let name = pair[0].stringValue else { continue }
                if name == "execution_error" {
                    let data = pair[1]
                    outcome = .failed(ComfyExecutionFailure(
                        promptID: promptID,
                        nodeID: data["node_id"]?.stringValue,
                        nodeType: data["node_type"]?.stringValue,
                        exceptionType: data["exception_type"]?.stringValue,
                        exceptionMessage: data["exception_message"]?.stringValue ?? "execution failed"
                    ))
                } else if name == "execution_interrupted" {
                    outcome = .interrupted
                }
            }
        }
        var started: Double?
        var ended: Double?
        for message in messages {
            guard let pair = message.arrayValue, pair.count == 2, let name = pair[0].stringValue, let at = pair[1]["timestamp"]?.doubleValue else { continue }
            if name == "execution_start" {
                started = at
            } else if ["execution_success", "execution_error", "execution_interrupted"].contains(name) {
                ended = at
            }
        }
        let ran = started.flatMap { start in ended.map { $0 - start } }.flatMap { $0 >= 0 && $0 < 1e12 ? Int($0) : nil }
        return ComfyHistoryEntry(outcome: outcome, images: images, executionMilliseconds: ran)
    }
}
