/// Why a prompt did not produce an image, with what the caller needs to act on it.
public struct ComfyError: Error, Sendable, CustomStringConvertible {
    /// The kinds of failure; the gateway maps each to one HTTP status in one place.
    public enum Code: Sendable, Equatable {
        case backendUnavailable
        case workflowInvalid
        case executionFailed
        case interrupted
        case timedOut
        case noImage
        case badResponse
        case busy
        case cancelled
        /// ComfyUI lost the prompt (it restarted, or its result went with a dropped socket):
        /// the job may run again.
        case promptLost
        /// The workflow names a model no backend has.
        case modelNotFound
    }

    public var code: Code
    public var message: String
    /// The backend concerned, when one is.
    public var backend: String?
    /// ComfyUI's own `error` object (validation failures).
    public var comfyError: JSONValue?
    /// ComfyUI's `node_errors` (validation failures).
    public var nodeErrors: JSONValue?
    /// ComfyUI's `execution_error` details.
    public var failure: ComfyExecutionFailure?
    /// The node the error is about.
    public var nodeID: String?
    /// The model no backend has (`modelNotFound`), and those of its folder that they have.
    public var model: ModelReference?
    public var availableModels: [String] = []
    /// ComfyUI itself failed a call (no connection, no answer in time, an error status of its
    /// own): it counts against the backend's health (`BackendHealthMonitor.restCall`). Not
    /// what one job brings on (an answer too large, a refused upload, a slow large file).
    public var isServerFault = false
    /// No backend that can run a stored job is up, while another is, and its queue time is not
    /// over: it leaves the backends' line to wait in the runner for one to come back
    /// (`JobRunner`), holding none of the places the async jobs that can run share. The count
    /// of health changes it was judged at (`BackendPool.healthChanges`): after another, it may run.
    public var waitsForBackend: UInt64?

    public init(code: Code, message: String, backend: String? = nil) {
        self.code = code
        self.message = message
        self.backend = backend
    }

    public var description: String { message }

    /// The message as callers and painters read it: the GPU servers' addresses are operators'
    /// (/healthz, the log). Where the reason comes from curl, NIO or the socket (unreachable,
    /// lost, an odd answer), it names hosts, resolved addresses and ports in forms of its own:
    /// only the sentence before it is kept. Elsewhere (ComfyUI's own words) the URLs are replaced.
    public var callerMessage: String {
        guard let backend else { return message }
        var text = message
        // One backend, or all of them (`BackendPool`'s "none is reachable"), comma-separated.
        let urls = backend.split(separator: ",").map(String.init)
        for (index, url) in urls.enumerated() {
            let name = urls.count == 1 ? "a ComfyUI backend" : "ComfyUI backend \(index + 1)"
            text = text.replacingOccurrences(of: "ComfyUI at \(url)", with: name).replacingOccurrences(of: url, with: name)
        }
        switch code {
        case .backendUnavailable, .promptLost, .badResponse:
            let end = [text.range(of: ": "), text.range(of: " (")].compactMap { $0?.lowerBound }.min() ?? text.endIndex
            return String(text[..<end])
        default:
            // After every URL: a host is part of the next URL too.
            for address in urls.compactMap({ ComfyServerURL($0) }) {
                text = text.replacingOccurrences(of: address.host, with: "the backend")
            }
            return text
        }
    }

    static func unavailable(_ backend: ComfyServerURL, _ reason: String) -> ComfyError {
        ComfyError(code: .backendUnavailable, message: "ComfyUI at \(backend) is unavailable: \(reason)", backend: backend.description)
    }

    static func promptLost(_ backend: ComfyServerURL, _ reason: String) -> ComfyError {
        ComfyError(code: .promptLost, message: "ComfyUI at \(backend) lost the prompt: \(reason)", backend: backend.description)
    }

    static func badResponse(_ backend: ComfyServerURL, _ reason: String, serverFault: Bool = false) -> ComfyError {
        var error = ComfyError(code: .badResponse, message: "ComfyUI at \(backend) answered unexpectedly: \(reason)", backend: backend.description)
        error.isServerFault = serverFault
        return error
    }

    static func executionFailed(_ backend: ComfyServerURL, _ failure: ComfyExecutionFailure) -> ComfyError {
        // `exception_message` names files on the GPU server (`cannot identify image file '/…/input/x.png'`).
        var failure = failure
        failure.exceptionMessage = ServerPathRedaction.redact(failure.exceptionMessage)
        let trimmed = failure.exceptionMessage.trimmingCharacters(in: .whitespacesAndNewlines)
        var error = ComfyError(code: .executionFailed, message: trimmed.isEmpty ? "execution failed" : trimmed, backend: backend.description)
        error.failure = failure
        error.nodeID = failure.nodeID
        return error
    }

    static func timedOut(_ timeout: Duration) -> ComfyError {
        ComfyError(code: .timedOut, message: "no result within \(timeout.components.seconds) s")
    }

    static let cancelled = ComfyError(code: .cancelled, message: "the caller went away")
}

import Foundation
