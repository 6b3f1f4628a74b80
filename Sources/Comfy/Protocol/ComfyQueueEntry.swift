import Foundation

/// One prompt in ComfyUI's queue as `GET /queue` lists it: the tuple
/// `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
struct ComfyQueueEntry: Sendable {
    let promptID: String
    /// The workflow it runs: `{node id: {"class_type", "inputs"}}`.
    let prompt: JSONValue
    let isRunning: Bool
    /// The mark the gateway put in its `extra_data` on a prompt nobody waits for once the
    /// process that posted it is gone (`PromptJob.endsWithProcess`).
    let leftoverMark: String?
    /// The gateway process that posted it (`thisProcess` of that process): a mark of this
    /// `STATE_DIR` from another process is a leftover; one of this process never is, whichever
    /// backend URL it went through.
    let process: String?

    /// The `extra_data` members that hold the mark and the process.
    static let leftoverMarkKey = "comfy_gateway_leftover"
    static let processKey = "comfy_gateway_process"
    /// This process, as its prompts' `extra_data` name it.
    static let thisProcess = UUID().uuidString.lowercased()

    /// Whether it carries `mark` and was posted by another process (an earlier one).
    func isLeftover(of mark: String) -> Bool {
        leftoverMark == mark && process != Self.thisProcess
    }

    /// The entries of a `GET /queue` answer, running ones first; malformed entries left out.
    static func decode(_ queue: JSONValue) -> [ComfyQueueEntry] {
        [("queue_running", true), ("queue_pending", false)].flatMap { key, running in
            (queue[key]?.arrayValue ?? []).compactMap { item -> ComfyQueueEntry? in
                guard let tuple = item.arrayValue, tuple.count >= 3, let id = tuple[1].stringValue else { return nil }
                let extra = tuple.count > 3 ? tuple[3] : .null
                return ComfyQueueEntry(
                    promptID: id, prompt: tuple[2], isRunning: running, leftoverMark: extra[leftoverMarkKey]?.stringValue, process: extra[processKey]?.stringValue
                )
            }
        }
    }

    /// Whether any node's input is a string `matches` accepts.
    func hasInput(where matches: (String) -> Bool) -> Bool {
        guard let nodes = prompt.objectValue else { return false }
        return nodes.values.contains { node in
            node["inputs"]?.objectValue?.values.contains { $0.stringValue.map(matches) ?? false } ?? false
        }
    }
}
